"""Experiment, not a feature: after a default SJC run, N more steps that update the appearance only, at small σ.

Trains the default run (PAAS, seed 0) of a toy prompt, scores it, then swaps in a guide whose σ is drawn from
[σ_lo, σ_hi] and an Adamax over the appearance grid alone (the density is frozen, so IoU cannot change), runs
N more steps and scores again (docs/toy-prior.md, "Where the PSNR gap is").

    python benchmarks/appearance_polish.py "a blue sphere" 0.05 0.5 600     # prints one JSON line
"""
import json
import sys

import torch

from sjc.config import RunConfig
from sjc.evaluate import evaluate_field, variant_config
from sjc.guidance import ScoreGuide
from sjc.optim import FusedAdamax
from sjc.priors import train_sigmas
from sjc.train import build_run, train

prompt, lo, hi, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
run = train(build_run(variant_config(RunConfig(prompt="eval"), prompt, "paas", 0)), None, progress=False)
obj = run.prior.truth(prompt)
before = evaluate_field(run, obj, rotations=False)
g = run.cfg.guidance
run.guide = ScoreGuide(run.prior, g.method, train_sigmas(run.prior, lo, hi), g.guidance_scale, g.num_noise)
run.optimizer = FusedAdamax([{"params": [run.field.appearance_raw], "lr": run.cfg.optim.lr}], foreach=True)
run.cfg.optim.steps += n
train(run, None, progress=False)
after = evaluate_field(run, obj, rotations=False)
print(json.dumps({"prompt": prompt, "sigma": [lo, hi], "steps": n, "before": before, "after": after}))
