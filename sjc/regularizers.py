"""Regularisers on the rendered weights and depth.

The emptiness loss's sum over the samples is taken by the renderer as it renders (`emptiness_sum` from the
weights it composited, or its twin inside the fused C++ pass, which never materialises them); a render carries
it as RenderOutput.emptiness, and `rendered_emptiness` turns it into the loss.
"""
from __future__ import annotations

import torch


def emptiness_sum(weights: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """Σ log(1 + scale·w) over ray samples: the emptiness loss's numerator (samples with w = 0 add nothing)."""
    return torch.log1p(scale * weights).sum()


def emptiness_loss(weights: torch.Tensor, n_samples: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """Mean over the ray samples inside the box of log(1 + scale·w); `weights` may omit samples whose w is 0."""
    return emptiness_sum(weights, scale) / n_samples.clamp_min(1)


def rendered_emptiness(out) -> torch.Tensor:
    """The emptiness loss of a render (a RenderOutput): its renderer's Σ log(1 + s·w) over its samples inside the box."""
    return out.emptiness / out.n_samples.clamp_min(1)


def emptiness_weight(base: float, step: int, switch_step: int, mult: float) -> float:
    """The emptiness weight at a step: base, times `mult` from `switch_step` on."""
    return base * (mult if step >= switch_step else 1.0)


def center_depth_loss(depth: torch.Tensor, far_depth: float = 10.0, box: float = 50 / 64) -> torch.Tensor:
    """Pull the object into the view's centre: mean depth inside the central box minus mean depth outside it.

    depth (B, 1, H, W) lies in [0, far_depth], so the loss is finite for every field; normalised by far_depth.
    Minimising it makes the centre nearer (more density on central rays) and the border farther (less density there).
    """
    h, w = depth.shape[-2:]
    ys = (torch.arange(h, device=depth.device) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=depth.device) + 0.5) / w * 2 - 1
    inside = ((ys.abs()[:, None] < box) & (xs.abs()[None, :] < box)).to(depth.dtype)   # no boolean indexing: no sync
    centre = (depth * inside).sum() / (inside.sum() * depth.shape[0]).clamp_min(1)
    border = (depth * (1 - inside)).sum() / ((1 - inside).sum() * depth.shape[0]).clamp_min(1)
    return (centre - border) / far_depth
