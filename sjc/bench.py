"""Benchmarks: time a complete SJC step (render, prior, backward, emptiness, Adamax) and its peak memory."""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from typing import Optional

import torch

from .config import RunConfig
from .priors.base import Prior
from .cameras import sample_train_cameras
from .build import build_optimizer, build_run
from .render import resolve_renderer
from .train import sjc_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(run, steps: int, warmup: int = 3) -> dict:
    """Wall time of `steps` SJC steps after `warmup` (which also absorbs compilation), synchronised at the ends."""
    for i in range(warmup):
        sjc_step(run, i)
    _sync(run.device)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    t0 = time.perf_counter()
    for i in range(steps):
        sjc_step(run, warmup + i)
    _sync(run.device)
    dt = time.perf_counter() - t0
    out = {"seconds_per_step": dt / steps, "steps_per_second": steps / dt}
    if run.device.type == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(run.device) / 2 ** 30
    return out


def sd_reference_run(device: str, optimised: bool, full_size: bool = True, latent: int = 64, grid: int = 100):
    """An SJC run at the reference SD configuration with a randomly initialised SD 1.5-sized U-Net.

    optimised: the default profile (on CUDA: fp16 U-Net, PyTorch SDPA attention, torch.compile with CUDA
    graphs; on CPU: fp32 with SDPA); else the simple fp32 baseline with diffusers' classic (non-SDPA)
    attention, run eagerly.
    """
    import tempfile

    from .priors.stable_diffusion import StableDiffusionPrior, load_sd_components
    from .tiny import build_tiny_sd

    cuda = device.startswith("cuda")
    dtype = torch.float16 if optimised and cuda else torch.float32   # fp16 only pays on a GPU
    with tempfile.TemporaryDirectory(prefix="sjc-bench-") as tmp:   # an SD-sized U-Net is GBs on disk
        folder = build_tiny_sd(tmp, latent_size=latent, full_size_unet=full_size)
        comps = load_sd_components(str(folder), dtype=dtype)
    if not optimised:
        from diffusers.models.attention_processor import AttnProcessor
        comps[0].set_attn_processor(AttnProcessor())
    prior = StableDiffusionPrior(str(folder), device, half=optimised and cuda, components=comps,
                                 compile=optimised and cuda)
    cfg = RunConfig(prompt="a hamburger")
    cfg.field.grid_size, cfg.render.resolution, cfg.optim.steps = grid, latent, 10000
    cfg.output.device = device
    return build_run(cfg, prior=prior)


def bench_sd(device: str = "cuda", steps: int = 20, repeats: int = 3, full_size: bool = True, latent: int = 64,
             grid: int = 100) -> dict:
    """Optimised vs simple fp32 baseline SD step, measured in one process on the same device."""
    result = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
              "torch": torch.__version__, "config": {"grid": grid, "latent": latent, "full_size_unet": full_size}}
    for name, opt in (("baseline_fp32", False), ("optimised", True)):
        run = sd_reference_run(device, opt, full_size, latent, grid)
        reps = [time_steps(run, steps) for _ in range(repeats)]
        result[name] = {"seconds_per_step": statistics.median(r["seconds_per_step"] for r in reps),
                        "steps_per_second": statistics.median(r["steps_per_second"] for r in reps),
                        "peak_gpu_memory_gib": max(r.get("peak_gpu_memory_gib", 0.0) for r in reps),
                        "repeats": [r["seconds_per_step"] for r in reps]}
        del run
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    result["speedup"] = result["baseline_fp32"]["seconds_per_step"] / result["optimised"]["seconds_per_step"]
    return result


# ------------------------------------------------------------------------------------ U-Net layout suite
def bench_unet_layout(prompt: str = "a blue mug", calls: int = 40, steps: int = 40, repeats: int = 5) -> dict:
    """The shipped toy prior in the default (NCHW) and the channels-last layout: its guided U-Net call and
    whole default SJC steps, interleaved in one process (median over repeats)."""
    from .priors.text_unet import PixelTextPrior

    layouts = {"contiguous": False, "channels_last": True}
    priors = {k: PixelTextPrior(channels_last=v) for k, v in layouts.items()}
    cond = priors["contiguous"].encode(prompt)
    x, t = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([500.0])
    runs = {}
    for k, p in priors.items():
        cfg = RunConfig(prompt=prompt)
        cfg.output.device = "cpu"   # where the priors above are, on a machine with a GPU too
        runs[k] = build_run(cfg, prior=p)
    result = {"machine": _machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "prompt": prompt, "calls": calls, "steps": steps, "repeats": repeats,
              "max_abs_difference": (priors["contiguous"].model_output(x, t, cond, 2.0)
                                     - priors["channels_last"].model_output(x, t, cond, 2.0)).abs().max().item()}
    per_call = {k: [] for k in layouts}
    per_step = {k: [] for k in layouts}
    for k, prior in priors.items():   # both warm before any timing: the process's first-call costs land on neither
        for _ in range(3):
            prior.model_output(x, t, cond, 2.0)
        time_steps(runs[k], 2)
    for r in range(repeats):
        for k in (list(layouts) if r % 2 == 0 else list(layouts)[::-1]):   # alternating order: no layout always first
            prior = priors[k]
            t0 = time.perf_counter()
            for _ in range(calls):
                prior.model_output(x, t, cond, 2.0)
            per_call[k].append((time.perf_counter() - t0) / calls)
            per_step[k].append(time_steps(runs[k], steps)["seconds_per_step"])
    for k in layouts:
        result[k] = {"seconds_per_call": statistics.median(per_call[k]),
                     "seconds_per_step": statistics.median(per_step[k])}
    for what in ("call", "step"):
        key = f"seconds_per_{what}"
        result[f"{what}_speedup"] = result["contiguous"][key] / result["channels_last"][key]
    return result


# ------------------------------------------------------------------------------------ renderer suite
class FixedTargetPrior(Prior):
    """A fixed-cost stand-in for a diffusion model: D(z, σ) = one fixed target image (a centred disc).

    It costs nothing, so a benchmark times the renderer, and it still grows an object, so the field
    changes over the run as it does with a real prior.
    """

    name = "fixed-target"
    appearance_init = "randn"

    def __init__(self, channels: int, size: int, sigmas: torch.Tensor, pixel_space: bool = False):
        super().__init__()
        self.channels, self.height, self.width, self.pixel_space = channels, size, size, pixel_space
        self.sigmas = sigmas
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        disc = (xx ** 2 + yy ** 2 < 0.35).float()
        self.target = disc.expand(channels, size, size)[None].clone()   # the background (0) outside the disc

    def encode(self, prompt):
        return None

    def D(self, x, sigma, cond=None, guidance=None):
        return self.target.to(x).expand_as(x)


BENCH_CONFIGS = {
    # The reference SD configuration (notes §3): 100³ grid, 64×64 4-channel latents, emptiness 1e4.
    "sd": {"grid_size": 100, "resolution": 64, "channels": 4, "steps": 600},
    # The default toy-world run: the learned prior at its defaults (steps None: the prior's default).
    "toy": {"steps": None},
}


def _bench_run(name: str, renderer: str, steps: int, seed: int = 0, grid_size: Optional[int] = None):
    """A run at a named benchmark configuration (the SD one with the fixed-cost stand-in prior)."""
    from .priors.vp import sigmas_from_alphas_cumprod
    from .tiny import sd_scheduler

    cfg = RunConfig(prompt="a blue sphere")
    cfg.render.renderer, cfg.optim.steps, cfg.optim.seed = renderer, steps, seed
    cfg.output.device = "cpu"
    if name != "sd":
        return build_run(cfg)
    c = BENCH_CONFIGS["sd"]
    cfg.field.grid_size, cfg.render.resolution = grid_size or c["grid_size"], c["resolution"]
    cfg.reg.emptiness_weight, cfg.camera.fov_min, cfg.camera.fov_max = 1e4, 40.0, 70.0
    sig = sigmas_from_alphas_cumprod(sd_scheduler().alphas_cumprod)
    return build_run(cfg, prior=FixedTargetPrior(c["channels"], c["resolution"], sig[10:-30]))


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while fn() runs (the renderer's activation memory)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


class FixedScaleGradient:
    """A guide that returns small random image gradients: the prior's cost and effect taken out of a step."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def __call__(self, x, cams, prompt, generator):
        return torch.randn(x.shape, generator=self.generator) * 0.01


def time_renderer_steps(run, renderer: str, rounds: int, every: int) -> dict:
    """Median over `rounds` of the per-step time of `every` SJC steps on a copy of the run with `renderer`
    and a fixed-cost guide (render, backward, emptiness, Adamax; occupancy refreshed once per round)."""
    import copy
    import dataclasses

    cfg = copy.deepcopy(run.cfg)
    cfg.render.renderer = renderer
    field = copy.deepcopy(run.field)
    gen = torch.Generator().manual_seed(123)
    r = dataclasses.replace(run, cfg=cfg, field=field, guide=FixedScaleGradient(gen), timings={},
                            optimizer=build_optimizer(field, cfg),
                            renderer=resolve_renderer(renderer, run.device, cfg.reg.emptiness_scale),
                            generators={"camera": gen, "noise": gen})
    sjc_step(r, 0)   # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(every):
            sjc_step(r, i)
        times.append((time.perf_counter() - t0) / every)
    mem = _saved_bytes(lambda: sjc_step(r, 1))
    samples = int(r.render(sample_train_cameras(1, cfg.camera, gen)).n_evaluated)
    med = statistics.median(times)
    return {"seconds_per_step": med, "steps_per_second": 1 / med, "repeats": times,
            "samples_per_step": samples, "samples_per_second": samples / med,
            "saved_for_backward_mib": mem / 2 ** 20}


def bench_renderers(name: str = "toy", steps: Optional[int] = None, snapshots: int = 6, rounds: int = 5,
                    progress: bool = True) -> dict:
    """Dense reference vs fast renderer over a whole optimisation at a named configuration.

    The run trains with the fast renderer; at `snapshots` evenly spaced steps (the first on the initial
    field) both renderers are timed on copies of the current field, in this process.
    """
    from tqdm import tqdm

    run = _bench_run(name, "fast", steps or BENCH_CONFIGS[name]["steps"])
    cfg = run.cfg
    steps = cfg.optim.steps   # resolved: the prior's default where none was given
    at = sorted({round(i * steps / (snapshots - 1)) for i in range(snapshots)})
    result = {"config": name, "machine": _machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "grid_size": cfg.field.grid_size, "resolution": cfg.render.resolution, "channels": run.field.channels,
              "steps": steps, "emptiness_weight": cfg.reg.emptiness_weight,
              "occupancy_threshold": cfg.render.occupancy_threshold, "occupancy_every": cfg.render.occupancy_every,
              "rounds": rounds, "snapshots": []}
    bar = tqdm(total=steps, desc=f"bench {name}", disable=not progress)
    train_time = 0.0
    prior_times = []
    for target in at:
        while run.step < target:
            t0 = time.perf_counter()
            sjc_step(run, run.step)
            train_time += time.perf_counter() - t0
            run.step += 1
            bar.update(1)
        snap = {"step": run.step, "occupied": float(run.field.occupancy.float().mean())}
        for renderer in ("dense", "fast"):
            snap[renderer] = time_renderer_steps(run, renderer, rounds, cfg.render.occupancy_every)
        snap["speedup"] = snap["dense"]["seconds_per_step"] / snap["fast"]["seconds_per_step"]
        x = torch.zeros(1, *run.prior.shape)
        t0 = time.perf_counter()
        run.guide(x, None, cfg.prompt, run.generators["noise"])
        prior_times.append(time.perf_counter() - t0)
        result["snapshots"].append(snap)
    bar.close()
    snaps = result["snapshots"]
    # Over the run: the mean step time of each renderer across the evenly spaced snapshots.
    dense = statistics.fmean(s["dense"]["seconds_per_step"] for s in snaps)
    fast = statistics.fmean(s["fast"]["seconds_per_step"] for s in snaps)
    result.update(dense_seconds_per_step=dense, fast_seconds_per_step=fast, speedup=dense / fast,
                  prior_seconds_per_call=statistics.median(prior_times),
                  whole_run_seconds_fast=train_time)
    return result


def sweep_renderers(grid_sizes=(32, 48, 64, 100), resolutions=(32, 64), rounds: int = 5, steps: int = 300) -> list:
    """Step time of both renderers against grid size and resolution, each on a field trained for `steps`
    steps at the SD benchmark settings (stand-in prior) at that grid size."""
    import copy

    rows = []
    for n in grid_sizes:
        run = _bench_run("sd", "fast", steps, grid_size=n)
        while run.step < steps:
            sjc_step(run, run.step)
            run.step += 1
        for res in resolutions:
            r2 = copy.copy(run)
            r2.cfg = copy.deepcopy(run.cfg)
            r2.cfg.render.resolution = res
            row = {"grid_size": n, "resolution": res, "occupied": float(run.field.occupancy.float().mean())}
            for renderer in ("dense", "fast"):
                row[renderer] = time_renderer_steps(r2, renderer, rounds, run.cfg.render.occupancy_every)["seconds_per_step"]
            row["speedup"] = row["dense"] / row["fast"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)   # progress; stdout holds the result alone
    return rows


def _machine() -> str:
    import os
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def plot_sweep(rows: list, path) -> None:
    """Step time against grid size, one line per renderer and resolution (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for res in sorted({r["resolution"] for r in rows}):
        sel = [r for r in rows if r["resolution"] == res]
        for renderer, style in (("dense", "--"), ("fast", "-")):
            ax.plot([r["grid_size"] for r in sel], [1000 * r[renderer] for r in sel], style, marker="o",
                    label=f"{renderer}, {res}×{res} rays")
    ax.set_xlabel("grid size (voxels per side)")
    ax.set_ylabel("ms per SJC step (prior excluded)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
