"""GPU checks for the SD path: no host synchronisation inside an SJC step, and memory-saving options.

Run on a CUDA machine:  python experiments/scripts/sd_gpu_checks.py  (prints JSON)
"""
import json
import warnings

import torch

from sjc.bench import sd_reference_run, time_steps
from sjc.train import sjc_step


def sync_free(run, steps: int = 3) -> list[str]:
    """Warnings raised by torch's sync debug mode during `steps` SJC steps (empty: no host syncs)."""
    for i in range(2):
        sjc_step(run, i)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        for i in range(steps):
            sjc_step(run, 2 + i)
        torch.cuda.set_sync_debug_mode("default")
    return sorted({str(w.message).splitlines()[0][:120] for w in caught})


def main():
    out = {"device": torch.cuda.get_device_name()}
    run = sd_reference_run("cuda", optimised=True)
    out["sync_warnings_sd_step"] = sync_free(run)
    prior = run.prior
    del run
    # Memory-saving profile for small cards: attention slicing + text encoder / VAE kept on the CPU.
    prior.unet.set_attention_slice("auto")
    prior.vae.to("cpu")
    prior.text_encoder.to("cpu")
    torch.cuda.empty_cache()
    from sjc.config import RunConfig
    from sjc.build import build_run
    cfg = RunConfig(prompt="a hamburger")
    cfg.output.device = "cuda"
    small = build_run(cfg, prior=prior)
    out["sliced_offloaded"] = time_steps(small, 10)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
