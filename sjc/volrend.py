"""Volume rendering maths as pure tensor functions: rays against the box, uniform samples, compositing and
accumulation along rays, for dense samples (R, S) and for packed ones (P,) with their ray index alike.

Optical depth τ_i = σ_i·δ_i of a sample, transmittance T_i = exp(−Σ_{j<i} τ_j) in front of it, weight
w_i = (1 − e^{−τ_i})·T_i. A ray's colour is Σ w_i c_i, its opacity Σ w_i, its depth Σ w_i t_i + (1 − Σ w_i)·far.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

EARLY_STOP_TRANSMITTANCE = 1e-4   # samples behind this much opacity are dropped (their w sums to less)


def ray_box_intersect(o: torch.Tensor, d: torch.Tensor, lo: float = -1.0, hi: float = 1.0):
    """Slab test: entry and exit distances (R,) of rays with the box [lo, hi]^3; t_near ≥ 0, miss ⇔ t_far ≤ t_near."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0, t1 = (lo - o) * inv, (hi - o) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, torch.maximum(t_far, t_near)


def sample_step(grid_size: int, step_ratio: float) -> float:
    """Sample spacing in world units: step_ratio voxels of the [-1, 1] box."""
    return 2.0 / (grid_size - 1) * step_ratio


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


def segment_exclusive_cumsum(x: torch.Tensor, ray_idx: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Σ of the earlier entries of the same ray for packed samples (P,) sorted by ray; float64 inside."""
    cs = torch.cumsum(x.double(), 0) - x.double()                  # exclusive, over all rays
    counts = torch.bincount(ray_idx, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts                       # index of each ray's first sample
    return (cs - cs[first.clamp_max(max(x.shape[0] - 1, 0))][ray_idx]).to(x.dtype)


def compositing_weights(tau: torch.Tensor, ray_idx: Optional[torch.Tensor] = None,
                        n_rays: Optional[int] = None) -> torch.Tensor:
    """w_i = (1 − e^{−τ_i})·T_i from optical depths τ: dense (..., S) along the last axis, or packed (P,) sorted
    by ray with each sample's ray index (and the number of rays)."""
    if ray_idx is None:
        in_front = torch.cumsum(tau, -1) - tau
    else:
        in_front = segment_exclusive_cumsum(tau, ray_idx, n_rays)
    trans = torch.exp(-in_front)
    return (1.0 - torch.exp(-tau)) * trans


def accumulate_along_rays(values: torch.Tensor, ray_idx: Optional[torch.Tensor] = None,
                          n_rays: Optional[int] = None) -> torch.Tensor:
    """Per-ray sums: of dense values (R, S, ...) over their samples, or of packed ones (P, ...) by ray index."""
    if ray_idx is None:
        return values.sum(1)
    out = torch.zeros(n_rays, *values.shape[1:], device=values.device, dtype=values.dtype)
    return out.index_add(0, ray_idx, values)


class RayBatch(NamedTuple):
    """What every renderer returns for a batch of rays (R of them)."""
    rgb: torch.Tensor                      # (R, C) colour before the background
    opacity: torch.Tensor                  # (R,) Σ w
    depth: torch.Tensor                    # (R,) Σ w·t + (1 − Σ w)·far
    weights: Optional[torch.Tensor]        # every evaluated sample's w (None where never materialised)
    n_inside: torch.Tensor                 # samples inside the box (the emptiness loss's denominator)
    n_evaluated: torch.Tensor              # samples whose density was evaluated
    emptiness: torch.Tensor                # Σ log(1 + s·w) over the samples (the emptiness loss's numerator)


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
