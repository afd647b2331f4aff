"""The fused CPU renderer: one C++ pass per ray (sjc/csrc/volrend.cpp) does what dense_render_rays does with
tensors (trilinear density, compositing, colour where w > threshold) plus early termination and, as the fused
twin of regularizers.emptiness_sum, the emptiness regulariser's sum; it records each evaluated sample for an
exact hand-written backward pass (which therefore does not march again).
"""
from __future__ import annotations

import math

import torch

from .kernels import available, extension
from .volrend import EARLY_STOP_TRANSMITTANCE, RayBatch, max_samples, ray_box_intersect, samples_inside

__all__ = ["FusedVolumeRender", "available", "fused_render_rays"]


class FusedVolumeRender(torch.autograd.Function):
    """(density raw, appearance raw, d_scale) → (rgb (R, C), opacity (R), Σ w·t (R), Σ log(1 + s·w) (R), evaluated (R))."""

    @staticmethod
    def forward(ctx, raw, app, d_scale, o, d, t_near, n_in, occ, shift, step, thr, pixel_space, emp_scale,
                max_samples, save):
        n = raw.shape[-1]
        raw3 = raw.detach().reshape(n, n, n).contiguous()
        app2 = channels_last(app.detach())
        ds_exp = math.exp(float(d_scale))
        rgb, opacity, wt, empty, count, records, colours = extension().forward(
            o, d, t_near, n_in, raw3, app2, occ, ds_exp, shift, step, thr, EARLY_STOP_TRANSMITTANCE, pixel_space,
            emp_scale, max_samples, save)
        ctx.save_for_backward(o, d, t_near, count, records, colours)
        ctx.consts, ctx.shapes = (ds_exp, shift, step, thr, pixel_space, emp_scale), (raw.shape, app.shape)
        ctx.mark_non_differentiable(count)
        return rgb, opacity, wt, empty, count

    @staticmethod
    def backward(ctx, g_rgb, g_op, g_dep, g_emp, _):
        o, d, t_near, count, records, colours = ctx.saved_tensors
        if records.shape[0] == 0:
            raise RuntimeError("the fused renderer ran without recording its samples (save=False); cannot backpropagate")
        raw_shape, app_shape = ctx.shapes
        n, n_rays = raw_shape[-1], o.shape[0]
        # An output that did not reach the loss has no gradient: pass zeros.
        g_rgb = torch.zeros(n_rays, app_shape[1]) if g_rgb is None else g_rgb.contiguous()
        g_op, g_dep, g_emp = (torch.zeros(n_rays) if g is None else g.contiguous() for g in (g_op, g_dep, g_emp))
        geometry = ctx.needs_input_grad[0] or ctx.needs_input_grad[2]   # not in the appearance polish
        g_raw, g_app, g_ds = extension().backward(g_rgb, g_op, g_dep, g_emp, o, d, t_near, count, records, colours,
                                                  n, app_shape[1], *ctx.consts, geometry)
        # The appearance gradient comes back channels-last, the layout of the field's appearance grid.
        g_app = g_app.view(1, n, n, n, app_shape[1]).permute(0, 4, 1, 2, 3)
        return (g_raw.view(raw_shape) if geometry else None, g_app, g_ds if geometry else None, *([None] * 12))


def channels_last(app: torch.Tensor) -> torch.Tensor:
    """(1, C, N, N, N) appearance grid → (N³, C) with each voxel's channels adjacent (a view when stored so)."""
    c = app.shape[1]
    return app.permute(0, 2, 3, 4, 1).reshape(-1, c).contiguous()


def fused_render_rays(field, o: torch.Tensor, d: torch.Tensor, step: float, weight_threshold: float = 1e-4,
                      far_depth: float = 10.0, occupancy: tuple | None = None, emptiness_scale: float = 10.0):
    """The dense renderer's result, up to the samples it may skip, from one fused C++ pass per ray (CPU, float32):
    it skips samples in empty occupancy cells and stops a ray once its transmittance is negligible.

    Per-sample weights are never materialised: the emptiness regulariser's sum is taken in the same pass.
    """
    n_samples = max_samples(step)
    t_near, t_far = ray_box_intersect(o, d)
    n_in = samples_inside(t_near, t_far, step, n_samples)
    occ = occupancy[0].contiguous() if occupancy is not None and not bool(occupancy[1].all()) else \
        torch.empty(0, dtype=torch.bool)
    save = torch.is_grad_enabled() and any(p.requires_grad for p in (field.density_raw, field.appearance_raw,
                                                                      field.d_scale))
    rgb, opacity, wt, empty, count = FusedVolumeRender.apply(
        field.density_raw, field.appearance_raw, field.d_scale, o.contiguous(), d.contiguous(), t_near.contiguous(),
        n_in, occ, float(field.density_shift), float(step), float(weight_threshold), bool(field.pixel_space),
        float(emptiness_scale), n_samples, save)
    depth = wt + (1 - opacity) * far_depth
    return RayBatch(rgb, opacity, depth, None, n_in.sum(), count.sum(), empty.sum())
