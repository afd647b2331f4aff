"""Differentiable volume rendering as pure tensor functions, and the dense reference renderer."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .cameras import Cameras, camera_rays


def ray_box_intersect(o: torch.Tensor, d: torch.Tensor, lo: float = -1.0, hi: float = 1.0):
    """Slab test: entry and exit distances (R,) of rays with the box [lo, hi]^3; t_near ≥ 0, miss ⇔ t_far ≤ t_near."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0, t1 = (lo - o) * inv, (hi - o) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, torch.maximum(t_far, t_near)


def uniform_samples(t_near: torch.Tensor, t_far: torch.Tensor, step: float, n_samples: int):
    """Evenly spaced sample distances (R, S) starting half a step inside the box, and their validity mask."""
    i = torch.arange(n_samples, device=t_near.device, dtype=t_near.dtype)
    t = t_near[:, None] + (i + 0.5) * step
    return t, t < t_far[:, None]


def compositing_weights(density: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """w_i = α_i · T_i with transmittance T_i = exp(−Σ_{j<i} σ_j δ_j), along the last axis."""
    tau = density * delta
    trans = torch.exp(-(torch.cumsum(tau, -1) - tau))
    return (1.0 - torch.exp(-tau)) * trans


@dataclass
class RenderOutput:
    """A rendered batch: image (B, C, H, W), opacity and depth (B, 1, H, W), per-sample weights (R, S)."""
    image: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    weights: torch.Tensor
    valid: torch.Tensor


def sample_step(grid_size: int, step_ratio: float) -> float:
    """Sample spacing in world units: step_ratio voxels of the [-1, 1] box."""
    return 2.0 / (grid_size - 1) * step_ratio


def dense_render_rays(field, o: torch.Tensor, d: torch.Tensor, step: float, weight_threshold: float = 1e-4,
                      far_depth: float = 10.0):
    """The straightforward renderer: every sample's density, colour only where w > threshold.

    Returns colour (R, C) before the background, opacity (R,), depth (R,), weights (R, S), valid (R, S).
    """
    t_near, t_far = ray_box_intersect(o, d)
    n_samples = int(math.ceil(2 * math.sqrt(3) / step)) + 1
    t, valid = uniform_samples(t_near, t_far, step, n_samples)
    pts = o[:, None, :] + t[..., None] * d[:, None, :]
    sigma = field.density(pts.reshape(-1, 3)).view(t.shape) * valid
    w = compositing_weights(sigma, step)
    keep = (w > weight_threshold).detach()
    if o.is_cuda:
        # On a GPU, look colour up everywhere and mask: a gather by nonzero() would stall on the host.
        col = field.colour(pts.reshape(-1, 3)).view(*t.shape, -1)
        rgb = ((w * keep)[..., None] * col).sum(1)
    else:
        ray_idx, smp_idx = keep.nonzero(as_tuple=True)
        col = field.colour(pts[ray_idx, smp_idx])
        rgb = torch.zeros(o.shape[0], col.shape[1], device=o.device, dtype=col.dtype)
        rgb = rgb.index_add(0, ray_idx, w[ray_idx, smp_idx, None] * col)
    opacity = w.sum(-1)
    depth = (w * t).sum(-1) + (1 - opacity) * far_depth
    return rgb, opacity, depth, w, valid


RENDERERS = {"dense": dense_render_rays}   # names listed in config.RENDERER_NAMES


def render(field, cams: Cameras, height: int, width: int, step_ratio: float = 0.5, weight_threshold: float = 1e-4,
           far_depth: float = 10.0, renderer: str = "dense", subpixel: int = 1, chunk: int | None = None) -> RenderOutput:
    """Render a batch of views; subpixel > 1 averages s×s rays per output pixel (the 'subpixel' final render)."""
    o, d = camera_rays(cams, height, width, subpixel)
    b, hs, ws, _ = o.shape
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    fn = RENDERERS[renderer]
    step = sample_step(field.grid_size, step_ratio)
    chunk = chunk or o.shape[0]
    outs = [fn(field, o[i:i + chunk], d[i:i + chunk], step, weight_threshold, far_depth)
            for i in range(0, o.shape[0], chunk)]
    rgb, opacity, depth, w, valid = outs[0] if len(outs) == 1 else (torch.cat(x, 0) for x in zip(*outs))
    image = rgb + (1 - opacity)[:, None] * field.background(d)

    def to_img(x):
        x = x.view(b, hs, ws, -1).permute(0, 3, 1, 2)
        return torch.nn.functional.avg_pool2d(x, subpixel) if subpixel > 1 else x

    return RenderOutput(to_img(image), to_img(opacity[:, None]), to_img(depth[:, None]), w, valid)
