"""Are the true images the prior's fixed points? The 2D counterpart of from_oracle.py (docs/toy-prior.md).

Starts each of a prompt's 16 evaluation views at its true render, conditions it on its view prompt and
ascends the PAAS direction on the pixels (Adamax, one σ per step drawn from the table in [σmin, σmax], one
noise sample), then reports the PSNR of the result to the true render. An exact prior at the truth would
leave the images where they are; how far they drift measures the prior's imprecision near true images.

    python experiments/scripts/drift2d.py [--model FOLDER] [--prompts P ...] [--guidance 2] [--sigma-min 0.05 --sigma-max 0.5]
"""
import argparse
import json
import time

import torch

from sjc.cameras import eval_cameras
from sjc.metrics import psnr
from sjc.priors.text_unet import PixelTextPrior
from sjc.toyworld import parse_prompt, render_truth


def drift(prior, prompt: str, guidance: float, sigmas: torch.Tensor, steps: int, lr: float, seed: int = 0) -> float:
    """PSNR (dB) to the true renders after `steps` PAAS steps started at them."""
    cams = eval_cameras()
    truth = render_truth(parse_prompt(prompt)[1], cams, prior.height, prior.width)
    views = prior.views
    prompts = [views.prefix(views.label(float(a), float(e))) + prompt for a, e in zip(cams.azimuth, cams.elevation)]
    cond = torch.cat([prior.embed("").expand(len(prompts), -1, -1)] + [prior.embed(p) for p in prompts])   # one prompt per view
    g = torch.Generator().manual_seed(seed)
    x = truth.clone().requires_grad_(True)
    opt = torch.optim.Adamax([x], lr=lr)
    for _ in range(steps):
        s = sigmas[torch.randint(len(sigmas), (1,), generator=g)]
        n = torch.randn(x.shape, generator=g)
        with torch.no_grad():
            d = prior.D(x.detach() + s * n, s, cond, guidance)
        x.grad = -(d - x.detach()) / s   # ascend the PAAS direction
        opt.step()
        with torch.no_grad():
            x.clamp_(-1, 1)
    return psnr(x.detach(), truth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="toy prior folder (default: the built-in one)")
    ap.add_argument("--prompts", nargs="+", default=["a red cube", "a blue sphere"])
    ap.add_argument("--guidance", nargs="+", type=float, default=[2.0])
    ap.add_argument("--sigma-min", type=float, default=0.05)
    ap.add_argument("--sigma-max", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.05)
    a = ap.parse_args()
    torch.set_num_threads(2)
    prior = PixelTextPrior(a.model)
    sigmas = prior.train_sigmas(a.sigma_min, a.sigma_max)
    for p in a.prompts:
        for gs in a.guidance:
            t0 = time.perf_counter()
            db = drift(prior, p, gs, sigmas, a.steps, a.lr)
            print(json.dumps({"model": a.model or "built-in", "prompt": p, "guidance": gs, "sigma": [a.sigma_min, a.sigma_max],
                              "steps": a.steps, "psnr_to_truth": round(db, 2), "s": round(time.perf_counter() - t0, 1)}),
                  flush=True)


if __name__ == "__main__":
    main()
