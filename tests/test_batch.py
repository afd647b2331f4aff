"""sjc batch on real Ray clusters (a local one, and two nodes on this machine): one ordinary run folder per prompt
and seed, finished runs skipped, a killed worker's run resumed exactly; sjc score; bad input as one line."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import assert_one_line_error, field_tensors, sjc

ray = pytest.importorskip("ray")

SMALL = ["--prior", "closed-form", "--grid-size", "12", "--resolution", "8", "--no-video", "--no-mesh", "--quiet"]


def batch(capsys, prompts, out, *extra):
    return sjc(capsys, "batch", prompts, "--out-dir", out, *SMALL, *extra)


@pytest.mark.parametrize("content,name,hints", [
    ("", "p.txt", ["holds no prompts"]),
    ("# only a comment\n\n", "p.txt", ["holds no prompts"]),
    ('{"prompt": "a red cube"}\n{"prompt": "a blue sphere", "steps": \n', "p.jsonl", ["line 2", "not a JSON object"]),
    ('{"prompt": "a red cube", "stepz": 3}\n', "p.jsonl", ["line 1", "unknown setting 'stepz'"]),
    ('["a red cube"]\n', "p.jsonl", ["line 1", '"prompt"']),
    ("prompt,steps\na red cube,10\na blue sphere,ten\n", "p.csv", ["line 3", "steps must be an integer", "ten"]),
    ("prompt,colour\na red cube,red\n", "p.csv", ["line 2", "unknown setting 'colour'"]),
    ("steps\n10\n", "p.csv", ["line 1", "'prompt' column"]),
    ('{"prompt": "a red cube", "steps": -3}\n', "p.jsonl", ["line 1", "--steps must be a positive number"]),
    ('{"prompt": "a red cube", "out_dir": "x"}\n', "p.jsonl", ["unknown setting 'out_dir'"]),
    ("a red cube\n   \n", "p.txt", None),   # blank lines are skipped: this one is fine, see below
])
def test_a_bad_prompts_file_is_one_line_naming_its_line_and_nothing_is_made(capsys, tmp_path, content, name,
                                                                            hints):
    if hints is None:
        from sjc.batch import read_prompts
        (tmp_path / name).write_text(content)
        assert read_prompts(tmp_path / name) == [(1, "a red cube", {})]
        return
    (tmp_path / name).write_text(content)
    rc, _, err = batch(capsys, tmp_path / name, tmp_path / "out")
    assert_one_line_error(rc, err, *hints)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,hints", [
    (["--seeds", "0"], ["--seeds 0 runs nothing"]),
    (["--seeds", "-1"], ["--seeds must be at least 0"]),
    (["--cpus-per-run", "0"], ["--cpus-per-run must be a positive number"]),
    (["--address", "127.0.0.1:1"], ["cannot reach the Ray cluster at 127.0.0.1:1"]),
    (["--address", "nonsense"], ["--address nonsense", "host:port"]),
])
def test_bad_batch_flags_are_one_line_and_nothing_is_made(capsys, tmp_path, argv, hints):
    (tmp_path / "p.txt").write_text("a red cube\n")
    rc, _, err = batch(capsys, tmp_path / "p.txt", tmp_path / "out", *argv)
    assert_one_line_error(rc, err, *hints)
    assert not (tmp_path / "out").exists()


def test_a_missing_prompts_file_and_an_unwritable_out_dir(capsys, tmp_path):
    rc, _, err = batch(capsys, tmp_path / "nope.txt", tmp_path / "out")
    assert_one_line_error(rc, err, "no prompts file at")
    (tmp_path / "p.txt").write_text("a red cube\n")
    (tmp_path / "file").write_text("x")
    rc, _, err = batch(capsys, tmp_path / "p.txt", tmp_path / "file" / "out")
    assert_one_line_error(rc, err, "cannot write", "--out-dir")


def test_a_batch_writes_ordinary_runs_skips_finished_ones_and_keeps_going_past_a_failure(capsys, tmp_path):
    """2 prompts × 2 seeds and a JSONL row with its own seed and steps on a local Ray cluster: each folder is the
    run sjc generate writes (bit for bit, same threads), batch.md/json list them, the best seed is linked; a row the
    prior cannot take fails alone; a second call skips what is finished."""
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "a blue sphere"}\n# a comment\n{"prompt": "a red cube"}\n'
                 '{"prompt": "a green cone", "seed": 7, "steps": 25}\n{"prompt": "a hamburger", "prior": "toy"}\n')
    out = tmp_path / "out"
    rc, stdout, err = batch(capsys, p, out, "--seeds", 2, "--steps", 30)
    assert_one_line_error(rc, err, "2 of 7 runs failed", "the same command retries them")
    data = json.loads((out / "batch.json").read_text())
    by = {r["key"]: r for r in data["runs"]}
    assert list(by) == ["a-blue-sphere/seed0", "a-blue-sphere/seed1", "a-red-cube/seed0", "a-red-cube/seed1",
                        "a-green-cone/seed7", "a-hamburger/seed0", "a-hamburger/seed1"]
    assert data["finished"] == 5 and data["failed"] == 2
    for k in ("a-blue-sphere/seed0", "a-red-cube/seed1", "a-green-cone/seed7"):
        assert by[k]["status"] == "done" and by[k]["began_as"] == "new" and isinstance(by[k]["score"], float)
        cfg = json.loads((out / k / "config.json").read_text())
        assert cfg["optim"]["seed"] == int(k.rpartition("seed")[2])
        assert (out / k / "score.json").is_file() and (out / k / "metrics.json").is_file()
    assert by["a-green-cone/seed7"]["metrics"]["steps"] == 25 and by["a-red-cube/seed0"]["metrics"]["steps"] == 30
    assert all(by[k]["status"] == "failed" and "toy" in by[k]["error"] for k in by if k.startswith("a-hamburger"))
    for group in ("a-blue-sphere", "a-red-cube"):
        chosen = max((by[f"{group}/seed{s}"] for s in (0, 1)), key=lambda r: (r["score"], -r["seed"]))
        assert os.readlink(out / group / "best") == f"seed{chosen['seed']}"
        assert data["selected"][group] == chosen["key"]
    md = (out / "batch.md").read_text()
    assert "| a-red-cube/seed1 | done | new |" in md and "Selected per prompt" in md and "failed: " in md

    # the same run by sjc generate, with the batch's one thread per run: the same field, bit for bit
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc, _, err = sjc(capsys, "generate", "a red cube", *SMALL, "--steps", 30, "--seed", 1, "--out-dir",
                         tmp_path / "direct")
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, err
    a, b = field_tensors(out / "a-red-cube/seed1"), field_tensors(tmp_path / "direct")
    assert all(torch.equal(a[k], b[k]) for k in a)

    before = (out / "a-red-cube/seed1/checkpoint.safetensors").stat().st_mtime_ns
    p.write_text('{"prompt": "a blue sphere"}\n{"prompt": "a red cube"}\n{"prompt": "a green cone", "seed": 7, '
                 '"steps": 25}\n')
    rc, _, err = batch(capsys, p, out, "--seeds", 2, "--steps", 30)
    assert rc == 0, err
    again = json.loads((out / "batch.json").read_text())
    assert {r["began_as"] for r in again["runs"]} == {"done"} and again["finished"] == 5
    assert (out / "a-red-cube/seed1/checkpoint.safetensors").stat().st_mtime_ns == before
    assert [r["score"] for r in again["runs"]] == [by[r["key"]]["score"] for r in again["runs"]]
    rc, _, err = batch(capsys, p, out, "--seeds", 2, "--steps", 31)   # other settings: the folder is not reused
    assert rc != 0 and "holds a run of other settings (optim.steps is 30 there, 31 here)" in (
        out / "batch.md").read_text()


def test_sjc_score_is_the_same_number_for_the_same_run_and_is_written_beside_it(capsys, tiny_copy):
    rc, out1, err = sjc(capsys, "score", tiny_copy)
    assert rc == 0, err
    s = json.loads((tiny_copy / "score.json").read_text())
    assert s["views"] == 16 and s["score"] < 0 and s["worst_view"] <= s["score"] and len(s["by_sigma"]) >= 2
    rc, out2, _ = sjc(capsys, "score", tiny_copy)
    assert out1 == out2 and f"{s['score']:.5f}" in out1
    rc, _, err = sjc(capsys, "score", tiny_copy.parent / "nope")
    assert_one_line_error(rc, err, "no run folder")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args):
    ray_bin = Path(sys.executable).with_name("ray")
    return subprocess.run([str(ray_bin), *args], capture_output=True, text=True, timeout=180)


@pytest.fixture
def two_nodes(tmp_path, monkeypatch):
    """A head and a second node started by `ray start` on this machine, one CPU each: the head's address. The
    cluster uses Ray's token authentication (its default for `ray start`), so its clients say so too; torn down by
    killing its own processes (`ray stop` would stop every Ray cluster on the machine)."""
    import shutil
    import tempfile

    port, temp = _free_port(), tempfile.mkdtemp(prefix="sjc-ray-")   # short: Ray's socket paths must fit 107 bytes
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    try:
        assert _ray("get-auth-token", "--generate").returncode == 0   # a fresh machine has no token yet
        head = _ray("start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard=false",
                    "--node-ip-address", "127.0.0.1", "--temp-dir", temp)
        assert head.returncode == 0, head.stderr[-2000:]
        second = _ray("start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1", "--node-ip-address", "127.0.0.1")
        assert second.returncode == 0, second.stderr[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        for pid in _processes_with(f"127.0.0.1:{port}", temp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_batch_runs_across_a_two_node_cluster(capsys, tmp_path, two_nodes):
    (tmp_path / "p.txt").write_text("a blue sphere\na red cube\n")
    out = tmp_path / "out"
    q = subprocess.run([sys.executable, "-m", "sjc", "batch", str(tmp_path / "p.txt"), "--out-dir", str(out), *SMALL,
                        "--seeds", "3", "--steps", "150", "--address", two_nodes], capture_output=True, text=True,
                       timeout=300)
    assert q.returncode == 0, q.stderr[-3000:]
    data = json.loads((out / "batch.json").read_text())
    assert data["finished"] == 6 and data["cluster_cpus"] == 2
    nodes = {r["node"] for r in data["runs"]}
    assert len(nodes) == 2, f"every run ran on one node: {[(r['key'], r['node']) for r in data['runs']]}"
    assert "node 2" in (out / "batch.md").read_text()


def _checkpoint_step(run_dir: Path) -> int:
    from sjc.checkpoint import checkpoint_step
    try:
        return checkpoint_step(run_dir / "checkpoint.safetensors")
    except Exception:
        return -1


def _processes_with(*texts: str, start: bool = False) -> list[int]:
    """The processes whose command line holds (start: begins with) one of `texts`; a Ray worker's shows the task
    it runs."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            line = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") if d.name.isdigit() else ""
        except OSError:
            continue
        if any(line.startswith(t) if start else t in line for t in texts) and int(d.name) != os.getpid():
            pids.append(int(d.name))
    return pids


def test_a_worker_killed_mid_run_is_retried_and_its_run_ends_bit_identical(tmp_path):
    """SIGKILL the Ray worker training a run: Ray retries the task, which resumes from the last checkpoint, and
    the final field equals an undisturbed run's of the same seed and threads."""
    (tmp_path / "p.txt").write_text("a blue sphere\n")
    argv = [sys.executable, "-m", "sjc", "batch", str(tmp_path / "p.txt"), *SMALL, "--steps", "1500",
            "--ckpt-every", "25"]
    run_dir = tmp_path / "killed" / "a-blue-sphere" / "seed0"
    p = subprocess.Popen([*argv, "--out-dir", str(tmp_path / "killed")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and killed is None:
        step = _checkpoint_step(run_dir)
        if 100 <= step < 1000:
            for pid in _processes_with("ray::run_one", start=True):
                os.kill(pid, signal.SIGKILL)
                killed = step
        time.sleep(0.05)
    out, err = p.communicate(timeout=300)
    assert killed is not None, f"never saw the run's worker mid-run: {err[-2000:]}"
    assert p.returncode == 0, err[-2000:]
    data = json.loads((tmp_path / "killed" / "batch.json").read_text())
    assert data["runs"][0]["began_as"] == "partial", data["runs"][0]   # the retry resumed it
    q = subprocess.run([*argv, "--out-dir", str(tmp_path / "whole")], capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr[-2000:]
    a, b = field_tensors(run_dir), field_tensors(tmp_path / "whole" / "a-blue-sphere" / "seed0")
    assert all(torch.equal(a[k], b[k]) for k in a)
