"""Differentiable volume rendering as pure tensor functions: the dense reference, the packed and the fast renderer."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

from .cameras import Cameras, camera_rays
from .regularizers import emptiness_sum


def ray_box_intersect(o: torch.Tensor, d: torch.Tensor, lo: float = -1.0, hi: float = 1.0):
    """Slab test: entry and exit distances (R,) of rays with the box [lo, hi]^3; t_near ≥ 0, miss ⇔ t_far ≤ t_near."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0, t1 = (lo - o) * inv, (hi - o) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, torch.maximum(t_far, t_near)


def max_samples(step: float) -> int:
    """Samples per ray that cover the box's longest chord (2√3) at the given spacing."""
    return int(math.ceil(2 * math.sqrt(3) / step)) + 1


def samples_inside(t_near: torch.Tensor, t_far: torch.Tensor, step: float, n_samples: int) -> torch.Tensor:
    """How many of uniform_samples' distances lie before t_far, per ray (its validity mask, counted)."""
    return ((t_far - t_near) / step - 0.5).ceil().clamp_(0, n_samples).long()


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


def segment_exclusive_cumsum(x: torch.Tensor, ray_idx: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Σ of the earlier entries of the same ray for packed samples (P,) sorted by ray; float64 inside."""
    cs = torch.cumsum(x.double(), 0) - x.double()                  # exclusive, over all rays
    counts = torch.bincount(ray_idx, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts                       # index of each ray's first sample
    return (cs - cs[first.clamp_max(max(x.shape[0] - 1, 0))][ray_idx]).to(x.dtype)


class RayBatch(NamedTuple):
    """What a renderer returns for a batch of rays (R of them)."""
    rgb: torch.Tensor                      # (R, C) colour before the background
    opacity: torch.Tensor                  # (R,) Σ w
    depth: torch.Tensor                    # (R,) Σ w·t + (1 − Σ w)·far
    weights: Optional[torch.Tensor]        # every evaluated sample's w (None where never materialised)
    n_inside: torch.Tensor                 # samples inside the box (the emptiness loss's denominator)
    n_evaluated: torch.Tensor              # samples whose density was evaluated
    emptiness: Optional[torch.Tensor] = None   # Σ log(1 + s·w), where the renderer sums it itself


@dataclass
class RenderOutput:
    """A rendered batch: image (B, C, H, W), opacity and depth (B, 1, H, W), the emptiness sum and sample counts.

    emptiness is Σ log(1 + s·w) over the samples (the emptiness loss's numerator, differentiable);
    n_samples counts the samples inside the box (its denominator) and n_evaluated those whose density
    was computed. weights holds every evaluated sample's w (dense: (R, S), zero outside the box; packed:
    only the evaluated samples; fused: None, never materialised).
    """
    image: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    weights: Optional[torch.Tensor]
    n_samples: torch.Tensor
    emptiness: torch.Tensor
    n_evaluated: torch.Tensor


def sample_step(grid_size: int, step_ratio: float) -> float:
    """Sample spacing in world units: step_ratio voxels of the [-1, 1] box."""
    return 2.0 / (grid_size - 1) * step_ratio


def dense_render_rays(field, o: torch.Tensor, d: torch.Tensor, step: float, weight_threshold: float = 1e-4,
                      far_depth: float = 10.0):
    """The straightforward renderer: every sample's density, colour only where w > threshold.

    Returns a RayBatch with weights (R, S), zero outside the box.
    """
    t_near, t_far = ray_box_intersect(o, d)
    t, valid = uniform_samples(t_near, t_far, step, max_samples(step))
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
    return RayBatch(rgb, opacity, depth, w, valid.sum(), w.new_full((), w.numel(), dtype=torch.long))   # all R·S evaluated; no host→device copy (a sync on CUDA)


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


EARLY_STOP_TRANSMITTANCE = 1e-4   # samples behind this much opacity are dropped (their w sums to less)


def packed_render_rays(field, o: torch.Tensor, d: torch.Tensor, step: float, weight_threshold: float = 1e-4,
                       far_depth: float = 10.0, occupancy: tuple | None = None, early_stop: bool = True):
    """The fast renderer: the dense renderer's samples, but only those inside the box and in occupied cells.

    Samples are packed (no padding), composited per ray with a segmented cumulative sum, and colour is
    looked up only where w > threshold. Early ray termination: a gradient-free density pass finds where
    the transmittance falls below EARLY_STOP_TRANSMITTANCE, and the differentiable pass stops there.
    With every cell occupied (the initial field) it is the dense renderer itself.
    """
    fine, coarse = occupancy if occupancy is not None else (None, None)
    if fine is None or bool(coarse.all()):
        return dense_render_rays(field, o, d, step, weight_threshold, far_depth)
    n_rays = o.shape[0]
    t_near, t_far = ray_box_intersect(o, d)
    ray_idx, t, pts, n_valid = occupied_samples(o, d, t_near, t_far, step, max_samples(step), fine, coarse)
    if early_stop:
        with torch.no_grad():
            tau0 = field.density(pts) * step
            alive = (segment_exclusive_cumsum(tau0, ray_idx, n_rays) < -math.log(EARLY_STOP_TRANSMITTANCE))
            alive = alive.nonzero(as_tuple=True)[0]
        ray_idx, t, pts = ray_idx[alive], t[alive], pts[alive]
    tau = field.density(pts) * step
    trans = torch.exp(-segment_exclusive_cumsum(tau, ray_idx, n_rays))
    w = (1.0 - torch.exp(-tau)) * trans
    keep = (w > weight_threshold).detach().nonzero(as_tuple=True)[0]
    col = field.colour(pts[keep])
    rgb = torch.zeros(n_rays, col.shape[1], device=o.device, dtype=col.dtype).index_add(0, ray_idx[keep], w[keep, None] * col)
    opacity = torch.zeros(n_rays, device=o.device, dtype=w.dtype).index_add(0, ray_idx, w)
    depth = torch.zeros_like(opacity).index_add(0, ray_idx, w * t) + (1 - opacity) * far_depth
    return RayBatch(rgb, opacity, depth, w, n_valid, w.new_full((), w.shape[0], dtype=torch.long))


def fast_render_rays(field, o, d, step, weight_threshold=1e-4, far_depth=10.0, occupancy=None, emptiness_scale=10.0):
    """The fastest renderer here: on CPU the fused C++ kernel (else the packed one); on CUDA the dense one,
    whose step has no host synchronisation (packing needs nonzero(), which waits for the GPU)."""
    if o.device.type != "cpu":
        return dense_render_rays(field, o, d, step, weight_threshold, far_depth)
    from . import fused
    if o.dtype == torch.float32 and fused.available():
        return fused.fused_render_rays(field, o, d, step, weight_threshold, far_depth, occupancy, emptiness_scale)
    return packed_render_rays(field, o, d, step, weight_threshold, far_depth, occupancy)


def _fused(*args, **kwargs):
    """The fused C++ renderer (sjc.fused imports this module, so it is looked up on call)."""
    from .fused import fused_render_rays
    return fused_render_rays(*args, **kwargs)


# names listed in config.RENDERER_NAMES; "fast" picks fused or packed
RENDERERS = {"fast": fast_render_rays, "fused": _fused, "packed": packed_render_rays, "dense": dense_render_rays}
OCCUPANCY_RENDERERS = ("fast", "fused", "packed")
EMPTINESS_RENDERERS = ("fast", "fused")   # those that can sum the emptiness regulariser in their own pass


def uses_occupancy(renderer: str, device: torch.device) -> bool:
    """Whether a renderer skips by the occupancy grid on this device (fast is the dense renderer on CUDA)."""
    return renderer in OCCUPANCY_RENDERERS and not (renderer == "fast" and device.type != "cpu")


def render(field, cams: Cameras, height: int, width: int, step_ratio: float = 0.5, weight_threshold: float = 1e-4,
           far_depth: float = 10.0, renderer: str = "dense", subpixel: int = 1, chunk: int | None = None,
           emptiness_scale: float = 10.0) -> RenderOutput:
    """Render a batch of views; subpixel > 1 averages s×s rays per output pixel (the 'subpixel' final render)."""
    o, d = camera_rays(cams, height, width, subpixel)
    b, hs, ws, _ = o.shape
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    fn = RENDERERS[renderer]
    kw = {"occupancy": field.occupancy_grid()} if renderer in OCCUPANCY_RENDERERS else {}
    if renderer in EMPTINESS_RENDERERS:
        kw["emptiness_scale"] = emptiness_scale
    step = sample_step(field.grid_size, step_ratio)
    chunk = chunk or o.shape[0]
    outs = [fn(field, o[i:i + chunk], d[i:i + chunk], step, weight_threshold, far_depth, **kw)
            for i in range(0, o.shape[0], chunk)]
    outs = [x if x.emptiness is not None else x._replace(emptiness=emptiness_sum(x.weights, emptiness_scale))
            for x in outs]
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
