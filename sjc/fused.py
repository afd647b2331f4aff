"""The fused CPU renderer: sjc/csrc/volrend.cpp (with adamax.cpp) compiled on first use (torch's C++ extension loader, cached).

One C++ pass per ray does what dense_render_rays does with tensors (trilinear density, compositing,
colour where w > threshold) plus early termination and the emptiness regulariser's sum, recording each
evaluated sample for an exact hand-written backward pass (which therefore does not march again). Where the
extension cannot be built (no compiler), `available()` is False and the pure-PyTorch packed renderer is used.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import torch

from .render import EARLY_STOP_TRANSMITTANCE, RayBatch, max_samples, ray_box_intersect, samples_inside

_EXT = None
_FAILED = False


def _libmvec() -> bool:
    """glibc's vector maths library with the float exp and log1p variants (x86-64 Linux, glibc >= 2.35)."""
    import platform
    lib, version = platform.libc_ver()
    try:
        return (platform.system() == "Linux" and platform.machine() == "x86_64" and lib == "glibc"
                and tuple(int(v) for v in version.split(".")[:2]) >= (2, 35))
    except ValueError:
        return False


def _short_hash(text: str, n: int) -> str:
    """The first n hex digits of the SHA-1 of text (names a build)."""
    import hashlib
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def _cpu_signature() -> str:
    """A short hash of this CPU's model and instruction-set flags (names a build made for it)."""
    import platform
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            text += "".join(sorted({line for line in f if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        text += platform.processor()
    return _short_hash(text, 10)


def build_attempts(csrc: Path) -> list[tuple[str, list[str], list[str]]]:
    """(module name, extra cflags, extra ldflags) to try in order; the names are unique to this CPU and this checkout.

    First for this CPU's instruction set (AVX2/AVX-512 where present) with the vector maths library where it
    should exist, then without that library, then a portable build. The names carry the CPU's signature, so a
    shared build cache never hands a build to another CPU, and a hash of the source folder, so two checkouts
    (a clone next to an install) do not rebuild over each other's build whenever they take turns.
    """
    src = _short_hash(str(csrc.resolve()), 8)
    native = [] if os.environ.get("SJC_PORTABLE_BUILD") else [f"sjc_volrend_native_{_cpu_signature()}_{src}"]
    attempts = [(name + "_mvec", ["-march=native", "-DSJC_LIBMVEC"], ["-lmvec"]) for name in native if _libmvec()]
    return attempts + [(name, ["-march=native"], []) for name in native] + [(f"sjc_volrend_{src}", [], [])]


def wait_for_build_lock(lock: Path, stale_after: float = 600.0, poll: float = 0.5, tell_after: float = 5.0) -> None:
    """Wait while another process builds the kernels; remove their lock once older than any build (a killed build's)."""
    told, t0 = False, time.monotonic()
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > stale_after:
            lock.unlink(missing_ok=True)
            print(f"sjc: removed {lock}, left {age / 60:.0f} min ago by a build that was killed")
            return
        if not told and time.monotonic() - t0 >= tell_after:
            print(f"sjc: waiting for another process to finish building the fused CPU renderer (lock {lock}; "
                  f"delete it if no other sjc process is running)", flush=True)
            told = True
        time.sleep(poll)


def extension():
    """The compiled kernel module, building it on first use; None where that fails (reported once)."""
    global _EXT, _FAILED
    if _EXT is None and not _FAILED:
        csrc = Path(__file__).resolve().parent / "csrc"
        sources = [str(csrc / "volrend.cpp"), str(csrc / "adamax.cpp")]
        os.environ.setdefault("MAX_JOBS", "2")
        cflags, ldflags = ["-O3", "-fno-math-errno", "-fopenmp"], ["-fopenmp"]
        error, told = None, False
        for name, cf, lf in build_attempts(csrc):
            try:   # no compiler, no ninja, no setuptools, …: the pure-PyTorch renderer still works
                from torch.utils.cpp_extension import _get_build_directory, load
                build_dir = Path(_get_build_directory(name, False))
                # torch waits forever on a lock left by a killed build (SIGTERM/SIGKILL skip its cleanup)
                wait_for_build_lock(build_dir / "lock")
                if not told and sys.stderr.isatty() and needs_build(build_dir, name, sources):   # why the run pauses
                    print("sjc: building the fused CPU renderer for this CPU (first use only, 1-2 minutes)...",
                          file=sys.stderr, flush=True)
                    told = True
                _EXT = load(name, sources, extra_cflags=cflags + cf, extra_ldflags=ldflags + lf, verbose=False)
                break
            except Exception as e:
                error = e
        if _EXT is None:
            _FAILED = True
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:120]
            print(f"sjc: warning: the fused CPU renderer could not be built ({reason}); using the PyTorch renderer")
    return _EXT


def needs_build(build_dir: Path, name: str, sources: list[str]) -> bool:
    """Whether a build named `name` is missing or older than its sources (so loading it compiles first)."""
    built = [build_dir / f"{name}{ext}" for ext in (".so", ".pyd") if (build_dir / f"{name}{ext}").exists()]
    return not built or max(os.path.getmtime(f) for f in sources) > built[0].stat().st_mtime


def available() -> bool:
    """Whether the fused CPU kernels are built (or can be built) for this machine."""
    return extension() is not None


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
