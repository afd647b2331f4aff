"""The fused CPU renderer: sjc/csrc/volrend.cpp compiled on first use (torch's C++ extension loader, cached).

One C++ pass per ray does what dense_render_rays does with tensors (trilinear density, compositing,
colour where w > threshold) plus early termination, and an exact hand-written backward pass. Where the
extension cannot be built (no compiler), `available()` is False and the pure-PyTorch packed renderer is used.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .render import EARLY_STOP_TRANSMITTANCE, max_samples, ray_box_intersect, samples_inside

_EXT = None
_FAILED = False


def extension():
    """The compiled kernel module, building it on first use; None where that fails (reported once)."""
    global _EXT, _FAILED
    if _EXT is None and not _FAILED:
        try:
            from torch.utils.cpp_extension import load
            src = Path(__file__).resolve().parent / "csrc" / "volrend.cpp"
            os.environ.setdefault("MAX_JOBS", "2")
            _EXT = load("sjc_volrend", [str(src)], extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"],
                        verbose=False)
        except Exception as e:   # no compiler, no ninja, …: the pure-PyTorch renderer still works
            _FAILED = True
            print(f"sjc: warning: the fused CPU renderer could not be built ({str(e).strip().splitlines()[-1][:120]}); "
                  "using the PyTorch renderer")
    return _EXT


def available() -> bool:
    return extension() is not None


class FusedVolumeRender(torch.autograd.Function):
    """(density raw, appearance raw, d_scale) → (rgb (R, C), opacity (R), Σ w·t (R), weights (R, S))."""

    @staticmethod
    def forward(ctx, raw, app, d_scale, o, d, t_near, n_in, occ, shift, step, thr, pixel_space, max_samples):
        n, c = raw.shape[-1], app.shape[1]
        raw3, app2 = raw.detach().reshape(n, n, n).contiguous(), app.detach().reshape(c, -1).contiguous()
        ds_exp = math.exp(float(d_scale))
        consts = (ds_exp, shift, step, thr, EARLY_STOP_TRANSMITTANCE, pixel_space)
        rgb, opacity, depth, weights, count = extension().forward(o, d, t_near, n_in, raw3, app2, occ, *consts,
                                                                    max_samples)
        ctx.save_for_backward(raw3, app2, o, d, t_near, n_in, occ)
        ctx.consts, ctx.shapes = consts, (raw.shape, app.shape)
        return rgb, opacity, depth, weights

    @staticmethod
    def backward(ctx, g_rgb, g_op, g_dep, g_w):
        raw3, app2, o, d, t_near, n_in, occ = ctx.saved_tensors
        n_rays = o.shape[0]
        # An output that did not reach the loss has no gradient: pass zeros (a 0-wide one for the weights).
        g_rgb = torch.zeros(n_rays, app2.shape[0]) if g_rgb is None else g_rgb.contiguous()
        g_op = torch.zeros(n_rays) if g_op is None else g_op.contiguous()
        g_dep = torch.zeros(n_rays) if g_dep is None else g_dep.contiguous()
        g_w = torch.zeros(n_rays, 0) if g_w is None else g_w.contiguous()
        g_raw, g_app, g_ds = extension().backward(g_rgb, g_op, g_dep, g_w, o, d, t_near, n_in, raw3, app2, occ,
                                                  *ctx.consts)
        raw_shape, app_shape = ctx.shapes
        return (g_raw.view(raw_shape), g_app.view(app_shape), g_ds, *([None] * 10))


def fused_render_rays(field, o: torch.Tensor, d: torch.Tensor, step: float, weight_threshold: float = 1e-4,
                      far_depth: float = 10.0, occupancy: tuple | None = None):
    """The dense renderer's result from one fused C++ pass per ray (CPU, float32), early termination included."""
    n_samples = max_samples(step)
    t_near, t_far = ray_box_intersect(o, d)
    n_in = samples_inside(t_near, t_far, step, n_samples)
    occ = occupancy[0].contiguous() if occupancy is not None and not bool(occupancy[1].all()) else \
        torch.empty(0, dtype=torch.bool)
    rgb, opacity, wt, weights = FusedVolumeRender.apply(
        field.density_raw, field.appearance_raw, field.d_scale, o.contiguous(), d.contiguous(), t_near.contiguous(),
        n_in, occ, float(field.density_shift), float(step), float(weight_threshold), bool(field.pixel_space), n_samples)
    depth = wt + (1 - opacity) * far_depth
    return rgb, opacity, depth, weights, n_in.sum()
