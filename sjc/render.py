"""The renderers: the dense reference, the packed one (occupancy grid, early termination) and the fused C++ one
(sjc.fused), resolved once per run into a `Renderer`, and `render`, which renders a batch of views with one.

Every renderer takes rays and returns a RayBatch with the same fields, the emptiness regulariser's sum among
them: the dense and packed renderers take it with regularizers.emptiness_sum from their weights, the fused one
in its own pass (its twin in C++), with the scale the Renderer was resolved with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import fused
from .cameras import Cameras, camera_rays
from .errors import SJCError
from .regularizers import emptiness_sum
from .volrend import (EARLY_STOP_TRANSMITTANCE, RayBatch, RenderOutput, accumulate_along_rays, compositing_weights,
                      max_samples, ray_box_intersect, sample_step, samples_inside, segment_exclusive_cumsum,
                      uniform_samples)


def dense_render_rays(field, o: torch.Tensor, d: torch.Tensor, step: float, weight_threshold: float = 1e-4,
                      far_depth: float = 10.0, occupancy=None, emptiness_scale: float = 10.0) -> RayBatch:
    """The straightforward renderer: every sample's density, colour only where w > threshold (no occupancy).

    Returns weights (R, S), zero outside the box.
    """
    t_near, t_far = ray_box_intersect(o, d)
    t, valid = uniform_samples(t_near, t_far, step, max_samples(step))
    pts = o[:, None, :] + t[..., None] * d[:, None, :]
    sigma = field.density(pts.reshape(-1, 3)).view(t.shape) * valid
    w = compositing_weights(sigma * step)
    keep = (w > weight_threshold).detach()
    if o.is_cuda:
        # On a GPU, look colour up everywhere and mask: a gather by nonzero() would stall on the host.
        col = field.colour(pts.reshape(-1, 3)).view(*t.shape, -1)
        rgb = accumulate_along_rays((w * keep)[..., None] * col)
    else:
        ray_idx, smp_idx = keep.nonzero(as_tuple=True)
        col = field.colour(pts[ray_idx, smp_idx])
        rgb = accumulate_along_rays(w[ray_idx, smp_idx, None] * col, ray_idx, o.shape[0])
    opacity = accumulate_along_rays(w)
    depth = accumulate_along_rays(w * t) + (1 - opacity) * far_depth
    # all R·S evaluated; a tensor made on the device (a host→device copy would sync on CUDA)
    return RayBatch(rgb, opacity, depth, w, valid.sum(), w.new_full((), w.numel(), dtype=torch.long),
                    emptiness_sum(w, emptiness_scale))


# ------------------------------------------------------------------------------------------ occupancy


@torch.no_grad()
def occupancy_from_density(density: torch.Tensor, threshold: float) -> torch.Tensor:
    """Cells whose 3×3×3 neighbourhood holds a voxel denser than `threshold`: (N, N, N) bool, [z, y, x].

    Dilating by one voxel covers the 8 corners a trilinear lookup reads, so a sample in an empty cell
    has density ≤ threshold exactly, and skipping it changes a ray's transmittance by at most a factor
    exp(−threshold · its length inside empty cells).
    """
    return dilate(density > threshold)


def dilate(mask: torch.Tensor) -> torch.Tensor:
    """Cells with a set cell in their 3×3×3 neighbourhood (zero padding): one OR of shifted slices per axis.

    The same as a 3³ max pool of the mask, at a fraction of its cost on a CPU (this runs every few steps).
    """
    for dim in range(mask.dim()):
        n, out = mask.shape[dim], mask.clone()
        out.narrow(dim, 1, n - 1).logical_or_(mask.narrow(dim, 0, n - 1))
        out.narrow(dim, 0, n - 1).logical_or_(mask.narrow(dim, 1, n - 1))
        mask = out
    return mask


COARSE_BLOCK = 4   # voxels per side of a coarse occupancy cell (the first, cheap skipping pass)


@torch.no_grad()
def coarse_occupancy(fine: torch.Tensor, block: int = COARSE_BLOCK) -> torch.Tensor:
    """Blocks of block³ cells holding any occupied cell, dilated by one block: (⌈N/block⌉,)³ bool."""
    pooled = torch.nn.functional.max_pool3d(fine[None, None].float(), block, stride=block, ceil_mode=True)
    return dilate(pooled[0, 0] > 0)


def _cells(p: torch.Tensor, n: int, scale: float) -> torch.Tensor:
    """Flat [z, y, x] index of the cell of size `scale` voxels holding each world point (..., 3)."""
    c = ((p + 1) * (0.5 * (n - 1) / scale) + (0.5 if scale == 1 else 0.0)).long().clamp_(0, math.ceil(n / scale) - 1)
    m = math.ceil(n / scale)
    return (c[..., 2] * m + c[..., 1]) * m + c[..., 0]


@torch.no_grad()
def occupied_samples(o, d, t_near, t_far, step: float, n_samples: int, fine: torch.Tensor | None,
                     coarse: torch.Tensor | None):
    """The dense renderer's samples that lie in the box and in occupied cells, packed and sorted by ray.

    Two passes: one candidate per segment of k samples (k·step ≤ one coarse block) against the dilated
    coarse grid, then each surviving sample against the fine grid. Returns (ray index (P,), distance t (P,),
    point (P, 3), number of samples inside the box).
    """
    n_in = samples_inside(t_near, t_far, step, n_samples)
    n_valid = n_in.sum()
    if fine is None or bool(coarse.all()):
        ray_idx, smp_idx = (torch.arange(n_samples, device=o.device)[None] < n_in[:, None]).nonzero(as_tuple=True)
        t = t_near[ray_idx] + (smp_idx + 0.5) * step
        pts = torch.addcmul(o[ray_idx], t[:, None], d[ray_idx])
        if fine is None:
            return ray_idx, t, pts, n_valid
    else:
        n = fine.shape[-1]
        k = max(1, int(COARSE_BLOCK * 2.0 / (n - 1) / step))
        n_seg = math.ceil(n_samples / k)
        seg = torch.arange(n_seg, device=o.device)
        seg_pts = o[:, None, :] + (t_near[:, None] + (seg * k + k / 2) * step)[..., None] * d[:, None, :]
        seg_ok = coarse.reshape(-1)[_cells(seg_pts, n, COARSE_BLOCK)] & (seg[None] * k < n_in[:, None])
        ray_idx, seg_idx = seg_ok.nonzero(as_tuple=True)
        ray_idx = ray_idx.repeat_interleave(k)
        smp_idx = (seg_idx[:, None] * k + torch.arange(k, device=o.device)).reshape(-1)
        inside = (smp_idx < n_in[ray_idx]).nonzero(as_tuple=True)[0]
        ray_idx, smp_idx = ray_idx[inside], smp_idx[inside]
        t = t_near[ray_idx] + (smp_idx + 0.5) * step
        pts = torch.addcmul(o[ray_idx], t[:, None], d[ray_idx])
    ok = fine.reshape(-1)[_cells(pts, fine.shape[-1], 1)].nonzero(as_tuple=True)[0]
    return ray_idx[ok], t[ok], pts[ok], n_valid


def packed_render_rays(field, o: torch.Tensor, d: torch.Tensor, step: float, weight_threshold: float = 1e-4,
                       far_depth: float = 10.0, occupancy: tuple | None = None, emptiness_scale: float = 10.0,
                       early_stop: bool = True) -> RayBatch:
    """The dense renderer's samples, but only those inside the box and in occupied cells.

    Samples are packed (no padding), composited per ray with a segmented cumulative sum, and colour is
    looked up only where w > threshold. Early ray termination: a gradient-free density pass finds where
    the transmittance falls below EARLY_STOP_TRANSMITTANCE, and the differentiable pass stops there.
    With every cell occupied (the initial field) it is the dense renderer itself.
    """
    fine, coarse = occupancy if occupancy is not None else (None, None)
    if fine is None or bool(coarse.all()):
        return dense_render_rays(field, o, d, step, weight_threshold, far_depth, emptiness_scale=emptiness_scale)
    n_rays = o.shape[0]
    t_near, t_far = ray_box_intersect(o, d)
    ray_idx, t, pts, n_valid = occupied_samples(o, d, t_near, t_far, step, max_samples(step), fine, coarse)
    if early_stop:
        with torch.no_grad():
            tau0 = field.density(pts) * step
            alive = (segment_exclusive_cumsum(tau0, ray_idx, n_rays) < -math.log(EARLY_STOP_TRANSMITTANCE))
            alive = alive.nonzero(as_tuple=True)[0]
        ray_idx, t, pts = ray_idx[alive], t[alive], pts[alive]
    w = compositing_weights(field.density(pts) * step, ray_idx, n_rays)
    keep = (w > weight_threshold).detach().nonzero(as_tuple=True)[0]
    col = field.colour(pts[keep])
    rgb = accumulate_along_rays(w[keep, None] * col, ray_idx[keep], n_rays)
    opacity = accumulate_along_rays(w, ray_idx, n_rays)
    depth = accumulate_along_rays(w * t, ray_idx, n_rays) + (1 - opacity) * far_depth
    return RayBatch(rgb, opacity, depth, w, n_valid, w.new_full((), w.shape[0], dtype=torch.long),
                    emptiness_sum(w, emptiness_scale))


# ------------------------------------------------------------------------------------------ the run's renderer


RENDERERS: dict[str, Callable[..., RayBatch]] = {"fused": fused.fused_render_rays, "packed": packed_render_rays,
                                                 "dense": dense_render_rays}


@dataclass(frozen=True)
class Renderer:
    """A renderer as resolved for a run: its name, its ray function, whether it skips by the field's occupancy
    grid, and the emptiness scale s of the regulariser's sum Σ log(1 + s·w) it takes."""
    name: str
    rays: Callable[..., RayBatch]
    occupancy: bool
    emptiness_scale: float = 10.0


def resolve_renderer(name: str, device, emptiness_scale: float = 10.0) -> Renderer:
    """'fast' → fused on the CPU (packed where the C++ kernels cannot be built), dense on CUDA, whose step then
    has no host synchronisation (packing needs nonzero(), which waits for the GPU); other names as they are."""
    device = torch.device(device)
    if name == "fast":
        name = "dense" if device.type != "cpu" else "fused" if fused.available() else "packed"
    if name not in RENDERERS:
        raise SJCError(f"unknown --renderer {name!r}; choose one of fast, {', '.join(RENDERERS)}")
    if name == "fused" and (device.type != "cpu" or not fused.available()):
        why = "runs on the CPU only" if device.type != "cpu" else "could not be built on this machine"
        raise SJCError(f"--renderer fused: the fused C++ renderer {why}; use --renderer fast, packed or dense")
    return Renderer(name, RENDERERS[name], name != "dense", emptiness_scale)


def render(field, cams: Cameras, height: int, width: int, renderer: Renderer | str = "dense", step_ratio: float = 0.5,
           weight_threshold: float = 1e-4, far_depth: float = 10.0, subpixel: int = 1,
           chunk: Optional[int] = None) -> RenderOutput:
    """Render a batch of views; subpixel > 1 averages s×s rays per output pixel (the 'subpixel' final render)."""
    if isinstance(renderer, str):
        renderer = resolve_renderer(renderer, field.density_raw.device)
    o, d = camera_rays(cams, height, width, subpixel)
    b, hs, ws, _ = o.shape
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    occupancy = field.occupancy_grid() if renderer.occupancy else None
    step = sample_step(field.grid_size, step_ratio)
    chunk = chunk or o.shape[0]
    outs = [renderer.rays(field, o[i:i + chunk], d[i:i + chunk], step, weight_threshold, far_depth, occupancy,
                          renderer.emptiness_scale) for i in range(0, o.shape[0], chunk)]
    if len(outs) == 1:
        rgb, opacity, depth, w, n_valid, n_eval, empty = outs[0]
    else:
        rgb, opacity, depth = (torch.cat(x, 0) for x in list(zip(*outs))[:3])
        w = None if outs[0].weights is None else torch.cat([x.weights.reshape(-1) for x in outs])
        n_valid, n_eval, empty = (sum(getattr(x, k) for x in outs) for k in ("n_inside", "n_evaluated", "emptiness"))
    image = rgb + (1 - opacity)[:, None] * field.background(d)

    def to_img(x):
        x = x.view(b, hs, ws, -1).permute(0, 3, 1, 2)
        return torch.nn.functional.avg_pool2d(x, subpixel) if subpixel > 1 else x

    return RenderOutput(to_img(image), to_img(opacity[:, None]), to_img(depth[:, None]), w, n_valid, empty, n_eval)
