"""How much of the gap to the oracle is the prior's, and how much the optimisation's (docs/toy-prior.md).

Trains the oracle (the field fitted to the true views) of one toy prompt, then runs a method's full
default schedule (the SJC steps and the polish) from the oracle's finished field. If the prior's score
were exact at the truth, that run would stay at the oracle's numbers; where it ends is the method's
fixed point near the truth. The run from the usual empty start (`sjc eval`'s run of the same prompt,
method and seed, to the last digit) falls short of that point by what the optimisation path costs.

    python experiments/scripts/from_oracle.py "a red cube" [METHOD] [SEED]   # prints one JSON line
"""
import json
import sys
import time

import torch

from sjc.config import RunConfig
from sjc.evaluate import variant_config
from sjc.metrics import evaluate_field
from sjc.build import build_run
from sjc.train import train

def timed(run):
    t0 = time.perf_counter()
    train(run, None, progress=False)
    return run, time.perf_counter() - t0


def main() -> None:
    prompt = sys.argv[1]
    method = sys.argv[2] if len(sys.argv) > 2 else "paas"
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    torch.set_num_threads(1)
    oracle, oracle_s = timed(build_run(variant_config(RunConfig(prompt="eval"), prompt, "oracle", seed)))
    obj = oracle.prior.truth(prompt)
    warm = build_run(variant_config(RunConfig(prompt="eval"), prompt, method, seed), oracle.prior)
    warm.field.load_state_dict(oracle.field.state_dict())   # same start otherwise: step 0, fresh Adamax, same seeds
    warm, warm_s = timed(warm)
    print(json.dumps({"prompt": prompt, "method": method, "seed": seed,
                      "oracle": {**evaluate_field(oracle, obj, rotations=False), "s": oracle_s},
                      "from_oracle": {**evaluate_field(warm, obj, rotations=False), "s": warm_s}}))


if __name__ == "__main__":
    main()
