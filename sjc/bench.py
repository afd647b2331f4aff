"""Benchmarks: time a complete SJC step (render, prior, backward, emptiness, Adamax) and its peak memory."""
from __future__ import annotations

import platform
import statistics
import time

import torch

from .config import RunConfig
from .train import build_run, sjc_step


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
