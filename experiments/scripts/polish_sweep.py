"""Sweep the appearance polish: the SJC steps once per (prompt, seed), then each polish setting from there.

The geometry phase does not depend on the polish, so each (prompt, seed) trains its `--steps` once,
checkpoints, and every setting resumes from that checkpoint (the exact-resume path of `sjc resume`).
The setting "none" is the run without a polish; the others differ from the toy prior's default
polish ("default") in one thing each. One JSON line per run goes to <out>.jsonl, then a Markdown
summary paired against "default" to <out>.md. A rerun resumes: a (prompt, seed) whose settings are all
in <out>.jsonl already is skipped (the rows do not record --steps: resume only with the same flags).

    python experiments/scripts/polish_sweep.py --out experiments/toy-prior/psnr/polish-sweep --seeds 3 --jobs 2 --steps 1000 --emptiness-weight 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

# name → what differs from the default polish (σ ∈ [0.05, 0.5], 600 steps, the run's method, polish guidance,
# noise samples per step and lr)
SETTINGS: dict[str, dict] = {
    "default": {},
    "none": {"steps": 0},
    "sigma-0.2-0.5": {"sigma": (0.2, 0.5)},
    "sigma-0.1-1": {"sigma": (0.1, 1.0)},
    "sigma-0.2-1": {"sigma": (0.2, 1.0)},
    "sds-weighting": {"method": "sds"},
    "guidance-3": {"guidance": 3.0},
    "guidance-2": {"guidance": 2.0},
    "guidance-1.5": {"guidance": 1.5},
    "guidance-1.25": {"guidance": 1.25},
    "guidance-1": {"guidance": 1.0},
    "num-noise-2": {"num_noise": 2},
    "num-noise-4": {"num_noise": 4},
    "lr-0.02": {"lr": 0.02},
    "lr-0.1": {"lr": 0.1},
    "lr-0.2": {"lr": 0.2},
    "steps-1200": {"steps": 1200},
}


def polish_cell(args) -> list[dict]:
    """Train one (prompt, seed) through the SJC steps, then each setting's polish from that checkpoint."""
    prompt, seed, names, jsonl, steps, emptiness, polish_guidance = args
    import torch

    from sjc.config import RunConfig
    from sjc.evaluate import variant_config
    from sjc.metrics import evaluate_field
    from sjc.guidance import ScoreGuide
    from sjc.build import build_run
    from sjc.train import resume_from, save, train

    torch.set_num_threads(1)
    cfg = variant_config(RunConfig(), prompt, "paas", seed)
    cfg.optim.steps, cfg.optim.polish_steps = steps, 0   # steps None: the prior's default
    cfg.reg.emptiness_weight = emptiness                 # None: the prior's default
    cfg.guidance.polish_guidance_scale = polish_guidance  # the "default" setting's (None: the prior's)
    run = build_run(cfg)
    default = (cfg.guidance.polish_sigma_min, cfg.guidance.polish_sigma_max)
    default_steps = run.prior.config_defaults()["polish_steps"]
    t0 = time.perf_counter()
    train(run, None, progress=False)
    base_s = time.perf_counter() - t0
    obj = run.prior.truth(prompt)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        save(run, Path(d))
        for name in names:
            s, g = SETTINGS[name], run.cfg.guidance
            resume_from(run, Path(d))
            run.cfg.optim.polish_steps = s.get("steps", default_steps)
            run.polish_guide = ScoreGuide(run.prior, s.get("method", g.method),
                                          run.prior.train_sigmas(*s.get("sigma", default)),
                                          s.get("guidance", g.polish_guidance_scale),
                                          s.get("num_noise", g.polish_num_noise))
            if "lr" in s:   # during the polish only the appearance has a gradient, so this is its lr alone
                run.optimizer.param_groups[0]["lr"] = s["lr"]
            t0 = time.perf_counter()
            train(run, None, progress=False)
            row = {"prompt": prompt, "seed": seed, "setting": name, "emptiness_weight": run.cfg.reg.emptiness_weight,
                   **evaluate_field(run, obj, rotations=False),
                   "base_s": base_s, "polish_s": time.perf_counter() - t0}
            rows.append(row)
            with open(jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    return rows


def summary_table(rows: list[dict], reference: str = "default") -> str:
    """Mean PSNR per setting, and its difference from the reference paired by prompt and seed."""
    by: dict[str, dict] = {}
    for r in rows:
        by.setdefault(r["setting"], {})[(r["prompt"], r["seed"])] = r
    ref = by[reference]
    seeds = sorted({r["seed"] for r in rows})
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    lines = [f"| setting | runs | mean PSNR (dB) | − {reference} | per seed | prompts better / worse |",
             "|---|---|---|---|---|---|"]
    for name, cells in by.items():
        keys = [k for k in cells if k in ref]
        diff = {k: cells[k]["psnr"] - ref[k]["psnr"] for k in keys}
        per_seed = [statistics.fmean(v for k, v in diff.items() if k[1] == s) for s in seeds]
        per_prompt = [statistics.fmean(v for k, v in diff.items() if k[0] == p) for p in prompts]
        lines.append(f"| {name} | {len(keys)} | {statistics.fmean(cells[k]['psnr'] for k in keys):.2f} | "
                     f"{statistics.fmean(diff.values()):+.3f} | {', '.join(f'{v:+.2f}' for v in per_seed)} | "
                     f"{sum(v > 0 for v in per_prompt)} / {sum(v < 0 for v in per_prompt)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from sjc.evaluate import DEFAULT_EVAL_PROMPTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output prefix: <out>.jsonl (appended) and <out>.md")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--prompts", nargs="+", default=DEFAULT_EVAL_PROMPTS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="SJC steps before the polish (default: the prior's)")
    ap.add_argument("--emptiness-weight", type=float, default=None, help="default: the prior's")
    ap.add_argument("--polish-guidance-scale", type=float, default=None,
                    help="the polish guidance of \"default\" and the settings that keep it (default: the prior's)")
    a = ap.parse_args()
    jsonl = Path(f"{a.out}.jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = {}   # (prompt, seed) → the settings <out>.jsonl already has
    for line in (jsonl.read_text().splitlines() if jsonl.is_file() else []):
        r = json.loads(line)
        done.setdefault((r["prompt"], r["seed"]), set()).add(r["setting"])
    cells = [(p, s, a.settings, str(jsonl), a.steps, a.emptiness_weight, a.polish_guidance_scale) for s in range(a.seeds) for p in a.prompts
             if not set(a.settings) <= done.get((p, s), set())]
    with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as pool:
        for rows in pool.map(polish_cell, cells):
            print(rows[0]["prompt"], rows[0]["seed"], {r["setting"]: round(r["psnr"], 2) for r in rows}, flush=True)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    if "default" in {r["setting"] for r in rows}:
        Path(f"{a.out}.md").write_text(summary_table(rows))


if __name__ == "__main__":
    main()
