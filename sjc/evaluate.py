"""`sjc eval`: prompts × method variants × seeds, each trained without a run folder and scored against the toy
world's true object, into Markdown and JSON tables (resumable, and reusing earlier tables' cells)."""
from __future__ import annotations

import copy
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from .atomic import write_text
from .build import build_run
from .errors import SJCError
from .metrics import FINE_SUPERSAMPLE, evaluate_field
from .priors import load_prior, prior_class
from .priors.loading import resolve_model
from .run_folder import prepare_out_dir
from .train import train

# Six objects the learned toy prior was trained on, then six combinations held out of its training
# (sjc.prior_training.HELD_OUT); both asymmetric shapes appear in each half.
DEFAULT_EVAL_PROMPTS = [
    "a blue sphere", "a red cube", "a green cone", "a yellow cylinder", "a red cube with a ball on its front",
    "a blue mug",
    "a purple sphere", "a green cube", "a cyan cone", "a yellow torus", "a pink cube with a ball on its front",
    "an orange mug",
]
DEFAULT_VARIANTS = ["paas", "paas:noview", "oracle"]


def variant_config(base, prompt: str, variant: str, seed: int):
    """A run config for one table cell: 'method' or 'method:noview' on top of the base config."""
    cfg = copy.deepcopy(base)
    method, _, flag = variant.partition(":")
    cfg.prompt, cfg.guidance.method, cfg.optim.seed = prompt, method, seed
    if flag == "noview":
        cfg.guidance.view_prompts = False
    elif flag:
        raise SJCError(f"unknown variant option {flag!r} in {variant!r}: use 'method' or 'method:noview'")
    return cfg.validate()


def eval_cell(args) -> dict:
    """Train one (prompt, variant, seed) without writing a run folder and score it against the truth."""
    base, prompt, variant, seed, threads = args
    torch.set_num_threads(threads)
    cfg = variant_config(base, prompt, variant, seed)
    t0 = time.perf_counter()
    run = train(build_run(cfg), None, progress=False)
    obj = run.prior.truth(prompt)
    return {"prompt": prompt, "variant": variant, "seed": seed, "seconds": time.perf_counter() - t0,
            **evaluate_field(run, obj, rotations=True)}


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (prompt, variant)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["prompt"], r["variant"]), []).append(r)
    out = []
    for (prompt, variant), rs in groups.items():
        s = {"prompt": prompt, "variant": variant, "seeds": len(rs)}
        for k in ("iou", "iou_fine", "psnr", "iou_rot", "psnr_rot", "seconds"):
            if not all(k in r for r in rs):   # rows written before the fine IoU existed lack it
                continue
            vals = [r[k] for r in rs]
            s[k] = statistics.fmean(vals)
            s[k + "_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        out.append(s)
    return out


def markdown_table(summary: list[dict], variants: list[str]) -> str:
    """One row per prompt × variant, then the per-variant means (the fine IoU where every row has it)."""
    fine = all("iou_fine" in s for s in summary)
    # (key, format, column, column of the means)
    fine_col = f"IoU, {FINE_SUPERSAMPLE}× finer"
    spec = [("iou", ".3f", "IoU", "mean IoU"), ("iou_fine", ".3f", fine_col, f"mean {fine_col}"),
            ("psnr", ".2f", "PSNR (dB)", "mean PSNR"), ("iou_rot", ".3f", "IoU @best rot", "mean IoU @rot"),
            ("psnr_rot", ".2f", "PSNR @best rot", "mean PSNR @rot")]
    spec = [c for c in spec if fine or c[0] != "iou_fine"]
    cols, keys = [c[2] for c in spec], [c[:2] for c in spec]
    lines = ["| prompt | variant | " + " | ".join(cols) + " | s/run |", "|---|---|" + "---|" * (len(cols) + 1)]
    for s in summary:
        cells = [f"{s[k]:{f}}" + (f" ± {s[k + '_std']:{f}}" if s["seeds"] > 1 else "") for k, f in keys]
        lines.append(f"| {s['prompt']} | {s['variant']} | " + " | ".join(cells) + f" | {s['seconds']:.0f} |")
    lines += ["", "| variant | " + " | ".join(c[3] for c in spec) + " |", "|---|" + "---|" * len(cols)]
    for v in variants:
        ss = [s for s in summary if s["variant"] == v]
        if ss:
            lines.append(f"| {v} | " + " | ".join(f"{sum(s[k] for s in ss) / len(ss):{f}}" for k, f in keys) + " |")
    if any(s["seeds"] > 1 for s in summary):
        lines += ["", "± is the population standard deviation over the seeds (divided by n, not n − 1)."]
    return "\n".join(lines) + "\n"


def run_eval(base, prompts: list[str], variants: list[str], seeds: list[int], out_prefix, jobs: int = 1,
             log=None, reuse=()) -> list[dict]:
    """Run every cell (in `jobs` processes), write <out_prefix>.md and .json, return the summary.

    Each finished cell is appended to <out_prefix>.partial.jsonl at once, so an interrupted eval loses at most the
    cells in flight: the same call again skips the cells already there (same configuration only). Cells found in
    the `reuse` files (earlier evals' .json, same configuration only) are taken from there, not trained again.
    `log` gets one progress line per cell (default: stderr).
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    prompts, variants = list(dict.fromkeys(prompts)), list(dict.fromkeys(variants))   # a cell once, whatever is repeated
    prior = load_prior(base)
    for p in prompts:   # fail fast on a bad prompt or variant, before any training
        if prior.truth(p) is None:
            raise SJCError(f"sjc eval needs prompts with a known 3D truth; prior {base.prior!r} has none for {p!r}")
        for v in variants:
            variant_config(base, p, v, 0)
    config = {**base.to_dict(), "prior_weights": prior_weights(base)}   # what a reused or resumed cell must match
    out_prefix = Path(out_prefix)
    prepare_out_dir(out_prefix.parent, "--out")   # an unwritable --out fails now, not after every cell has trained
    cells = [(p, v, s) for p in prompts for v in variants for s in seeds]
    keys = set(cells)
    reused = {}
    for path in reuse:   # read before any training, so a wrong file fails now
        rows = {k: r for k, r in load_reused_rows(Path(path), config).items() if k in keys}
        log(f"sjc eval: reusing {len(rows)} of {len(cells)} cells from {path}")
        reused.update(rows)
    partial = Path(f"{out_prefix}.partial.jsonl")
    resumed = {k: r for k, r in load_partial_rows(partial, config).items() if k in keys}
    done = {**reused, **resumed}
    todo = [c for c in cells if c not in done]
    jobs = max(1, min(jobs, len(todo)))   # no idle workers holding threads: fewer cells than jobs get all the cores
    threads = max(1, torch.get_num_threads() // jobs)
    if resumed:
        log(f"sjc eval: resuming {partial}: {len(resumed)} of {len(cells)} cells already done")
    # (re)written whole first: a line cut short by the interruption must not swallow the next row
    write_text(partial, "".join(json.dumps(r) + "\n" for r in [{"config": config}, *done.values()]))
    t0 = time.perf_counter()
    with open(partial, "a") as f:
        for k, row in enumerate(_run_cells([(base, *c, threads) for c in todo], jobs), 1):
            f.write(json.dumps(row) + "\n")
            f.flush()
            done[cell_key(row)] = row
            eta = (time.perf_counter() - t0) / k * (len(todo) - k)
            log(f"[{len(cells) - len(todo) + k}/{len(cells)}] {row['prompt']} | {row['variant']} | seed {row['seed']}: "
                f"IoU {row['iou']:.3f}, PSNR {row['psnr']:.2f} dB, {row['seconds']:.0f} s; ETA {eta / 60:.0f} min")
    summary = write_tables(out_prefix, [done[c] for c in cells], variants, config)
    partial.unlink()
    return summary


def write_tables(out_prefix, rows: list[dict], variants: list[str], config: dict, **extra) -> list[dict]:
    """Write an eval's rows as <out_prefix>.json (rows, summary, config, any extra keys) and .md; return the summary."""
    summary = summarize(rows)
    write_text(Path(f"{out_prefix}.json"), json.dumps({"rows": rows, "summary": summary, "config": config, **extra},
                                                      indent=2) + "\n")
    write_text(Path(f"{out_prefix}.md"), markdown_table(summary, variants))
    return summary


def cell_key(row: dict) -> tuple:
    """The cell an eval row belongs to: (prompt, variant, seed)."""
    return row["prompt"], row["variant"], row["seed"]


def prior_weights(cfg) -> str:
    """A fingerprint of the run's prior: the SHA-256 of its model files (names and bytes), or its name where it
    loads none (the closed-form prior)."""
    cls = prior_class(cfg)
    model = resolve_model(cfg.model.model)[1] if cfg.model.model else cls.builtin_model
    if model is None:
        return cls.name
    path = Path(model)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return f"{cls.name}:sha256:{h.hexdigest()[:16]}"


def setting_differences(theirs, config: dict) -> str:
    """'' when an earlier eval's stored config equals `config`, else its differing fields, e.g. 'optim.steps'.

    The prior is compared by its weights' fingerprint, not by the path it was loaded from; an eval that
    recorded no fingerprint (written before 2026-12-06) cannot be checked, so it never matches.
    """
    if not isinstance(theirs, dict):
        return "no settings stored"
    # The model's path and what a built run would fill in (eval's base config is never built) are not settings.
    strip = lambda c: {**c, "model": {**(c.get("model") or {}), "model": None}, "resolved": None}   # noqa: E731
    differ = config_differences(strip(theirs), strip(json.loads(json.dumps(config))))   # via JSON: tuples → lists
    if "prior_weights" not in theirs:
        differ = [d + ": none recorded, so its prior cannot be checked" if d == "prior_weights" else d for d in differ]
    return ", ".join(differ[:4]) + (", …" if len(differ) > 4 else "")


def load_partial_rows(path, config: dict) -> dict:
    """The finished cells of an interrupted eval: {(prompt, variant, seed): row}; {} if there is none."""
    lines = path.read_text().splitlines() if path.is_file() else []
    if not any(line.strip() for line in lines):
        return {}
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    differ = setting_differences(header.get("config") if isinstance(header, dict) else None, config)
    if differ:
        raise SJCError(f"{path} holds cells of an eval with other settings ({differ}): rerun with the same flags "
                       "to resume it, or delete it to start over")
    rows = {}
    for line in lines[1:]:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:   # a line cut short by the interruption
            continue
        if isinstance(r, dict) and {"prompt", "variant", "seed"} <= r.keys():
            rows[cell_key(r)] = r
    return rows


def load_reused_rows(path, config: dict) -> dict:
    """The cells of an earlier eval's .json made with this configuration: {(prompt, variant, seed): row}."""
    if not path.is_file():
        raise SJCError(f"--reuse {path}: no such file; give the .json an earlier sjc eval wrote")
    try:
        data = json.loads(path.read_text())
        rows = {cell_key(r): r for r in data["rows"]}
        theirs = data["config"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SJCError(f"--reuse {path}: not the .json of an sjc eval ({type(e).__name__}: {e})") from None
    differ = setting_differences(theirs, config)
    if differ:
        raise SJCError(f"--reuse {path}: its cells were made with other settings ({differ}); "
                       "give this eval the same flags to reuse them")
    return rows


def config_differences(a, b, prefix: str = "") -> list[str]:
    """The dotted names of the fields where two nested configuration dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(a.keys() | b.keys()) for d in config_differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def die_with_parent() -> None:
    """Worker initializer: the kernel ends this process when its parent dies, even by SIGKILL (Linux; else a no-op)."""
    import ctypes
    import os
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:   # the parent died before the call above
        os.kill(os.getpid(), signal.SIGTERM)


def _run_cells(cells: list, jobs: int):
    """Yield each cell's row as it finishes."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if jobs > 1:   # a crashed worker raises BrokenProcessPool instead of hanging
        # a killed eval takes its workers with it instead of leaving them training orphaned cells
        pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=die_with_parent)
        try:
            for f in as_completed([pool.submit(eval_cell, c) for c in cells]):
                yield f.result()
        finally:   # on an error, the queued cells are dropped, not trained for nothing
            pool.shutdown(cancel_futures=True)
    else:
        yield from map(eval_cell, cells)
