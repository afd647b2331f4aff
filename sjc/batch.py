"""Many prompts × seeds as Ray tasks: one ordinary run folder each, resumable, and the best seed of each prompt.

`plan` turns a prompts file into runs (their configs checked before anything starts), `run_one` is one Ray task
(generate, or resume where an earlier batch left off, then the prior's score of the result), and `run_batch` sends
them to the cluster, shows their progress and writes batch.md and batch.json. Every run goes through the same
library calls as `sjc generate`; a batch adds no run of its own.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from .atomic import write_text
from .checkpoint import checkpoint_path, checkpoint_step
from .config import RunConfig
from .errors import SJCError
from .run_folder import CONFIG_NAME, prepare_out_dir, slugify
from .settings import base_type, leaves

# Settings a prompts file's rows may not set: the batch decides where each run goes and never replaces one.
NOT_PER_ROW = ("out_dir", "overwrite")
ROW_SUFFIXES = (".txt", ".jsonl", ".csv")


@dataclasses.dataclass
class BatchRun:
    """One (prompt row, seed): its config, complete but for what the prior fills in, and its folder."""
    key: str          # '<prompt-slug>/seed<N>', its folder under the batch's --out-dir
    row: int          # the prompts file's line (a CSV's data row counts from 2, after its header)
    cfg: RunConfig

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.output.out_dir)


# ------------------------------------------------------------------------------------------ the prompts file


def _settings() -> dict[str, tuple[str, type, Any]]:
    """Every run setting a row may set: {name: (dotted path, its class, its field)}, by field name and by path."""
    out = {}
    for path, owner, f in leaves(RunConfig()):
        if f.name in NOT_PER_ROW or f.name == "resolved":
            continue
        out[f.name] = out[path] = (path, type(owner), f)
    return out


def _from_text(text: str, t: type, where: str, key: str):
    """A CSV cell as its setting's type."""
    if t is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise SJCError(f"{where}: {key} must be true or false, got {text!r}")
    try:
        return t(text)
    except ValueError:
        raise SJCError(f"{where}: {key} must be {'an integer' if t is int else 'a number'}, got {text!r}") from None


def read_prompts(path: Path) -> list[tuple[int, str, dict[str, Any]]]:
    """(line number, prompt, {setting name: value}) per row of a prompts file: a text file (one prompt a line,
    '#' comments), JSONL (one object a line with "prompt" and any run settings) or CSV (a "prompt" column and
    one column per setting; an empty cell leaves it unset). One line for anything wrong, naming its line."""
    path = Path(path)
    if not path.is_file():
        raise SJCError(f"no prompts file at {path}: give a text file (one prompt a line), .jsonl or .csv")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SJCError(f"cannot read the prompts file {path}: {e}") from None
    settings, rows = _settings(), []
    kind = path.suffix.lower()
    if kind == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise SJCError(f"{path} line 1: a CSV prompts file needs a header with a 'prompt' column")
        for n, rec in enumerate(reader, start=2):
            if None in rec:
                raise SJCError(f"{path} line {n}: more cells than the header has columns")
            where = f"{path} line {n}"
            over = {}
            for k, v in rec.items():
                if k == "prompt" or v is None or v.strip() == "":
                    continue
                if k not in settings:
                    raise SJCError(f"{where}: unknown setting {k!r} (a run setting such as steps, seed, model, method)")
                over[k] = _from_text(v.strip(), base_type(settings[k][1], settings[k][2])[0], where, k)
            rows.append((n, rec["prompt"] or "", over))
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if kind != ".jsonl":
                rows.append((n, line.strip(), {}))
                continue
            where = f"{path} line {n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SJCError(f"{where}: not a JSON object ({e.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise SJCError(f'{where}: each line must be a JSON object with a "prompt" text, got {line.strip()[:60]}')
            for k in rec:
                if k != "prompt" and k not in settings:
                    raise SJCError(f"{where}: unknown setting {k!r} (a run setting such as steps, seed, model, method)")
            rows.append((n, rec.pop("prompt"), rec))
    if not rows:
        raise SJCError(f"{path} holds no prompts (one a line; lines starting with # are comments)")
    return rows


def plan(base: RunConfig, rows, seeds: list[int], out_dir: Path, source: str = "") -> list[BatchRun]:
    """One run per row and seed (a row that sets its own seed: that one alone), each config checked now, with the
    row's line in any message. Rows of one prompt share its folder; rows of one prompt with other settings get
    '<slug>-2', '<slug>-3'... in the order of the file."""
    settings, runs, slugs = _settings(), [], {}
    for n, prompt, over in rows:
        cfg = copy.deepcopy(base)
        cfg.prompt = prompt
        owners = {path: owner for path, owner, _ in leaves(cfg)}
        for k, v in over.items():
            path = settings[k][0]
            setattr(owners[path], path.rpartition(".")[2], v)
        tag = (prompt, json.dumps(over, sort_keys=True))
        if tag not in slugs:
            slug, taken, i = slugify(prompt) if prompt.strip() else "empty", set(slugs.values()), 1
            while (f"{slug}-{i}" if i > 1 else slug) in taken:
                i += 1
            slugs[tag] = f"{slug}-{i}" if i > 1 else slug
        for seed in ([cfg.optim.seed] if "seed" in over else seeds):
            c = copy.deepcopy(cfg)
            c.optim.seed = seed
            key = f"{slugs[tag]}/seed{seed}"
            c.output.out_dir = str(Path(out_dir).resolve() / key)
            try:
                c.validate()
            except SJCError as e:
                raise SJCError(f"{source} line {n}: {e}" if source else str(e)) from None
            runs.append(BatchRun(key, n, c))
    if len({r.key for r in runs}) < len(runs):
        dup = next(r.key for r in runs if sum(q.key == r.key for q in runs) > 1)
        raise SJCError(f"{source}: two rows would both write {dup} (the same prompt and settings and seed): "
                       f"remove one")
    return runs


# ------------------------------------------------------------------------------------------ one run (a Ray task)


def _differs(cfg: RunConfig, on_disk: RunConfig) -> Optional[str]:
    """The first setting the batch asks for that a folder's run was made with otherwise (None: the same run)."""
    have = {path: getattr(owner, f.name) for path, owner, f in leaves(on_disk)}
    for path, owner, f in leaves(cfg):
        want = getattr(owner, f.name)
        if path.startswith("output.") or path == "resolved" or want is None:
            continue
        if have.get(path) != want and not (isinstance(want, list) and list(have.get(path) or ()) == want):
            return f"{path} is {have.get(path)!r} there, {want!r} here"
    return None


def folder_state(run: BatchRun) -> str:
    """'new' (nothing there yet), 'done' (finished and finalised), 'partial' (a checkpoint to resume from), or
    'started' (a config.json but no checkpoint yet: interrupted before its first one)."""
    d = run.out_dir
    if not (d / CONFIG_NAME).is_file():
        return "new"
    on_disk = RunConfig.load(d / CONFIG_NAME)
    if why := _differs(run.cfg, on_disk):
        raise SJCError(f"{d} holds a run of other settings ({why}): remove that folder, or give the batch another "
                       f"--out-dir")
    ckpt = checkpoint_path(d)
    if not ckpt.is_file():
        return "started"
    total = (on_disk.optim.steps or 0) + (on_disk.optim.polish_steps or 0)
    return "done" if checkpoint_step(ckpt) >= total and (d / "metrics.json").is_file() else "partial"


def run_one(run: BatchRun, threads: int, report=None, score: bool = True) -> dict:
    """Generate one run, or resume it where an earlier try left off (a killed worker's retry included), or read a
    finished one; then its prior's score. Never raises: a run that fails says why in its result."""
    import torch

    from .pipeline import generate, load_run, resume
    from .score import prior_score

    torch.set_num_threads(threads)
    t0, last = time.perf_counter(), [0.0]
    result: dict[str, Any] = {"key": run.key, "prompt": run.cfg.prompt, "seed": run.cfg.optim.seed, "row": run.row,
                              "pid": os.getpid(), **_where()}

    def on_step(r) -> None:   # at most one report a second: the loop stays lean
        now = time.perf_counter()
        if report is not None and now - last[0] >= 1.0:
            last[0] = now
            report.update.remote(run.key, r.step, r.cfg.optim.steps + r.cfg.optim.polish_steps)

    try:
        state = folder_state(run)
        result["began_as"] = state
        if state == "done":
            metrics = json.loads((run.out_dir / "metrics.json").read_text())
        elif state == "partial":
            _, metrics = resume(run.out_dir, progress=False, on_step=on_step)
        else:
            cfg = copy.deepcopy(run.cfg)
            cfg.output.overwrite = state == "started"   # its own config.json, left by a try that died early
            _, metrics = generate(cfg, progress=False, on_step=on_step)
        result.update(status="done", metrics=_summary(metrics))
        if score:
            done_before = state == "done" and (run.out_dir / "score.json").is_file()
            scored = (json.loads((run.out_dir / "score.json").read_text()) if done_before
                      else prior_score(load_run(run.out_dir, field_only=True)))
            write_text(run.out_dir / "score.json", json.dumps(scored, indent=2) + "\n")
            result["score"] = scored["score"]
    except SJCError as e:
        result.update(status="failed", error=str(e))
    except Exception as e:   # a bug or a fault of this run alone: the others go on
        result.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _where() -> dict:
    """The Ray node this task runs on (its id and address), or the local host outside Ray."""
    try:
        import ray
        if ray.is_initialized():
            return {"node": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}
    except Exception:
        pass
    return {"node": "local", "ip": "127.0.0.1"}


def _summary(metrics: dict) -> dict:
    gt = metrics.get("ground_truth") or {}
    out = {k: metrics[k] for k in ("steps", "train_seconds") if k in metrics}
    out.update({k: gt[k] for k in ("iou", "psnr") if k in gt})
    return out


# ------------------------------------------------------------------------------------------ the batch (the driver)


def select_best(results: list[dict]) -> dict[str, dict]:
    """Per prompt folder: the finished seed with the highest prior score (ties: the lower seed)."""
    best: dict[str, dict] = {}
    for r in results:
        if r.get("status") != "done" or "score" not in r:
            continue
        group = r["key"].rpartition("/")[0]
        if group not in best or (r["score"], -r["seed"]) > (best[group]["score"], -best[group]["seed"]):
            best[group] = r
    return best


def link_best(out_dir: Path, best: dict[str, dict]) -> None:
    """<prompt folder>/best → the selected seed's folder (a relative link, replaced atomically)."""
    for group, r in best.items():
        link, tmp = out_dir / group / "best", out_dir / group / f".best-{os.getpid()}"
        if link.exists() and not link.is_symlink():
            continue   # a file or folder of the user's: left alone
        tmp.unlink(missing_ok=True)
        os.symlink(r["key"].rpartition("/")[2], tmp)
        os.replace(tmp, link)


def write_summary(out_dir: Path, runs: list[BatchRun], results: list[dict], best: dict[str, dict], info: dict) -> None:
    """batch.json (everything) and batch.md (a table per run and the selected seed per prompt), atomically."""
    data = {**info, "runs": results, "selected": {g: r["key"] for g, r in best.items()}}
    write_text(out_dir / "batch.json", json.dumps(data, indent=2) + "\n")

    def num(r, k, fmt):
        v = r.get("metrics", {}).get(k) if k in ("iou", "psnr", "steps") else r.get(k)
        return format(v, fmt) if isinstance(v, (int, float)) else "—"

    nodes = {r.get("node") for r in results}
    short = {n: f"node {i + 1}" for i, n in enumerate(sorted(n for n in nodes if n))}
    lines = [f"# Batch: {len(runs)} runs of {len({r.key.rpartition('/')[0] for r in runs})} prompts", "",
             f"{info['finished']} finished, {info['failed']} failed in {info['wall_seconds']:.0f} s on "
             f"{len(nodes)} node(s); {info['cpus_per_run']} CPU thread(s) per run.", "",
             "| run | status | began as | seconds | steps | IoU | PSNR (dB) | prior score | node |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        status = r["status"] if r["status"] != "failed" else f"failed: {r.get('error', '')[:300]}"
        lines.append(f"| {r['key']} | {status} | {r.get('began_as', '—')} | {num(r, 'seconds', '.1f')} | "
                     f"{num(r, 'steps', 'd')} | {num(r, 'iou', '.3f')} | {num(r, 'psnr', '.2f')} | "
                     f"{num(r, 'score', '.4f')} | {short.get(r.get('node'), '—')} |")
    if best:
        lines += ["", "Selected per prompt (highest prior score; `<prompt>/best` links to it):", "",
                  "| prompt | seed | prior score | IoU | PSNR (dB) |", "|---|---|---|---|---|"]
        lines += [f"| {r['prompt']} | {r['seed']} | {r['score']:.4f} | {num(r, 'iou', '.3f')} | "
                  f"{num(r, 'psnr', '.2f')} |" for r in best.values()]
    write_text(out_dir / "batch.md", "\n".join(lines) + "\n")


def check_address(address: Optional[str]) -> Optional[str]:
    """The cluster to join (--address, else $RAY_ADDRESS; None: start a local one), its head's port answering
    within seconds: Ray itself retries an unreachable one for minutes."""
    import socket

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address in (None, "local"):
        return None
    if address == "auto":   # Ray finds the cluster `ray start` left on this machine
        return address
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SJCError(f"--address {address}: give the Ray head as host:port (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise SJCError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}; is `ray start --head` "
                       f"running there?") from None
    return address


def connect(address: Optional[str]):
    """Join the Ray cluster at `address` (or $RAY_ADDRESS), else start a local one; one line where it fails."""
    try:
        import ray
    except ImportError:
        raise SJCError("sjc batch runs on Ray, which is not installed: pip install 'sjc[batch]' (or ray)") from None
    import logging
    address = check_address(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)
    except Exception as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "AuthToken" in str(e):   # `ray start` clusters use token authentication by default
            raise SJCError(f"{where} uses token authentication: set RAY_AUTH_MODE=token, with its token in "
                           f"~/.ray/auth_token or $RAY_AUTH_TOKEN") from None
        raise SJCError(f"cannot reach {where}: {first[:200]}") from None
    return ray


def run_batch(runs: list[BatchRun], out_dir: Path, address: Optional[str] = None, cpus_per_run: int = 1,
              retries: int = 3, select: str = "best", progress: bool = True, source: str = "") -> dict:
    """Send every run to the Ray cluster (joined or started), one task each, as many at once as its resources
    allow; show the batch's progress; write batch.json and batch.md; return batch.json's content."""
    from tqdm import tqdm

    out_dir = prepare_out_dir(Path(out_dir).resolve())
    ray = connect(address)
    t0 = time.perf_counter()
    try:
        gpu = any(r.cfg.output.device.startswith("cuda") for r in runs) or (
            any(r.cfg.output.device == "auto" for r in runs) and ray.cluster_resources().get("GPU", 0) > 0)
        task = ray.remote(run_one).options(max_retries=retries, retry_exceptions=False, num_cpus=cpus_per_run,
                                           num_gpus=1 if gpu else 0)
        board = ray.remote(_Board).options(num_cpus=0).remote()
        refs = {task.remote(r, cpus_per_run, board, select == "best"): r for r in runs}
        bar = tqdm(total=len(runs), desc="batch", unit="run", disable=not progress, dynamic_ncols=True)
        lines: dict[str, Any] = {}
        results: dict[str, dict] = {}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in ready:
                r = ray.get(ref)
                results[r["key"]] = r
                bar.update(1)
                if r["status"] == "failed":
                    bar.write(f"{r['key']}: failed: {r['error']}")
                if (line := lines.pop(r["key"], None)) is not None:
                    line.close()
            if progress:
                for key, (step, total) in ray.get(board.read.remote()).items():
                    if key in results:
                        continue
                    if key not in lines:
                        lines[key] = tqdm(total=total, desc=key, unit="step", leave=False, dynamic_ncols=True,
                                          position=len(lines) + 1)
                    lines[key].update(step - lines[key].n)
        bar.close()
        cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
    finally:
        ray.shutdown()
    ordered = [results[r.key] for r in runs]
    best = select_best(ordered) if select == "best" else {}
    link_best(out_dir, best)
    info = {"source": source, "cpus_per_run": cpus_per_run, "cluster_cpus": cluster_cpus,
            "wall_seconds": round(time.perf_counter() - t0, 2),
            "finished": sum(r["status"] == "done" for r in ordered),
            "failed": sum(r["status"] == "failed" for r in ordered), "select": select}
    write_summary(out_dir, runs, ordered, best, info)
    return json.loads((out_dir / "batch.json").read_text())


class _Board:
    """A Ray actor the running tasks report their step to, and the driver reads."""

    def __init__(self):
        self.steps: dict[str, tuple[int, int]] = {}

    def update(self, key: str, step: int, total: int) -> None:
        self.steps[key] = (step, total)

    def read(self) -> dict[str, tuple[int, int]]:
        return self.steps
