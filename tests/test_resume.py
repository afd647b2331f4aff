"""Determinism and resume: the same seed gives the same field, a killed run resumes bit for bit, --steps, the
polish, what resume may change, runs written by older versions, and folders that hold no valid run."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import trimesh
from safetensors import safe_open
from safetensors.torch import load_file

from sjc.cli import build_parser

from helpers import (TINY, NO_OUTPUTS, MESH_STEPS, POLISH_FOLLOWS_SJC, run_main, sjc, generate, assert_one_line_error,
                     ckpt_step, field_tensors, max_field_diff, temp_files, video_frames)


def test_same_seed_same_field_other_seed_differs(tmp_path):
    generate(tmp_path / "a", steps=30)
    generate(tmp_path / "b", steps=30)
    generate(tmp_path / "c", steps=30, extra=["--seed", "1"])
    a, b = load_file(str(tmp_path / "a" / "checkpoint.safetensors")), load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for k in a:   # field, optimiser and RNG state all bit-identical
        assert torch.equal(a[k], b[k]), k
    assert max_field_diff(tmp_path / "a", tmp_path / "c") > 1e-3


KILL_STEPS = 200


def test_resume_after_sigkill_is_exact(tmp_path):
    args = ["generate", "a blue sphere", *TINY, "--steps", str(KILL_STEPS), *NO_OUTPUTS]
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    rc, _, err = run_main([*args, "--out-dir", dir_a])
    assert rc == 0, err

    ck_b = dir_b / "checkpoint.safetensors"
    still_running = False
    with open(tmp_path / "b.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sjc.cli", *args, "--out-dir", str(dir_b)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 120
            while not ck_b.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            if ck_b.exists() and proc.poll() is None:
                still_running = True
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None and not still_running:
                proc.kill()
            proc.wait(timeout=30)
    log_text = (tmp_path / "b.log").read_text(errors="replace")
    assert ck_b.exists(), f"run B wrote no checkpoint:\n{log_text}"
    assert still_running, f"run B finished before it could be killed:\n{log_text}"
    assert proc.returncode == -signal.SIGKILL
    killed_at = ckpt_step(dir_b)
    assert 0 < killed_at < KILL_STEPS
    assert not (dir_b / "metrics.json").exists()

    rc, out, err = run_main(["resume", dir_b, "--quiet"])
    assert rc == 0, err
    assert ckpt_step(dir_b) == KILL_STEPS
    metrics = json.loads((dir_b / "metrics.json").read_text())
    assert metrics["steps"] == KILL_STEPS and metrics["steps_run"] == KILL_STEPS - killed_at
    a, b = (load_file(str(d / "checkpoint.safetensors")) for d in (dir_a, dir_b))   # bit for bit, every tensor
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert [n for n in temp_files(dir_b) if ".tmp" in n or "write-test" in n] == []
    ma = json.loads((dir_a / "metrics.json").read_text())["ground_truth"]
    assert metrics["ground_truth"]["iou"] == pytest.approx(ma["iou"], abs=1e-9)


def test_resume_with_more_steps(capsys, tiny_copy):
    rc, out, err = sjc(capsys, "resume", tiny_copy, "--steps", 45, "--quiet")
    assert rc == 0, err
    assert ckpt_step(tiny_copy) == 45
    assert json.loads((tiny_copy / "config.json").read_text())["optim"]["steps"] == 45
    metrics = json.loads((tiny_copy / "metrics.json").read_text())
    assert metrics["steps"] == 45 and metrics["steps_run"] == 15   # continued, not restarted
    assert "done: 45 steps" in out


def test_resume_finished_run_without_steps_trains_nothing(capsys, tiny_copy):
    before = field_tensors(tiny_copy)
    timings = {k: json.loads((tiny_copy / "metrics.json").read_text())[k]
               for k in ("train_seconds", "steps_run", "seconds_per_step")}
    rc, out, err = sjc(capsys, "resume", tiny_copy, "--quiet")
    assert rc == 0, err
    after = field_tensors(tiny_copy)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # Finalised again, it keeps the timings of the steps it did run (they were wiped to 0 before 2026-12-06).
    metrics = json.loads((tiny_copy / "metrics.json").read_text())
    assert {k: metrics[k] for k in timings} == timings and timings["steps_run"] == 30
    assert f"done: 30 steps in {timings['train_seconds']:.1f} s" in out


def test_resume_with_zero_steps(capsys, tiny_copy):
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 0, "--quiet")
    assert_one_line_error(rc, err, "--steps")
    assert json.loads((tiny_copy / "config.json").read_text())["optim"]["steps"] == 30


def test_resume_with_fewer_steps_than_done(capsys, tiny_copy):
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 10, "--quiet")
    assert_one_line_error(rc, err, "--steps", "30")
    assert json.loads((tiny_copy / "config.json").read_text())["optim"]["steps"] == 30


def test_emptiness_switch_is_fixed_at_creation(capsys, tiny_copy):
    cfg = json.loads((tiny_copy / "config.json").read_text())
    switch = cfg["reg"]["emptiness_mult_step"]
    assert switch == int(cfg["reg"]["emptiness_mult_after"] * cfg["optim"]["steps"])
    rc, _, _ = sjc(capsys, "resume", tiny_copy, "--steps", 2 * cfg["optim"]["steps"], "--quiet")
    assert rc == 0
    assert json.loads((tiny_copy / "config.json").read_text())["reg"]["emptiness_mult_step"] == switch


def test_polish_updates_only_the_appearance_and_resumes_exactly(tmp_path):
    """Steps past --steps move the appearance alone; a run stopped mid-polish and resumed ends bit-identical."""
    from sjc.config import RunConfig
    from sjc.build import build_run
    from sjc.train import resume_from, train

    def config(polish):
        cfg = RunConfig(prompt="a blue sphere", prior="closed-form")
        cfg.field.grid_size, cfg.render.resolution, cfg.optim.steps, cfg.optim.polish_steps = 12, 8, 20, polish
        cfg.output.ckpt_every = 1000
        return cfg

    plain = train(build_run(config(0)), progress=False)
    polished = train(build_run(config(15)), progress=False)
    assert polished.step == 35 and plain.step == 20
    before, after = plain.field.state_dict(), polished.field.state_dict()
    for name in ("density_raw", "d_scale", "background_raw"):
        assert torch.equal(before[name], after[name]), name
    assert (before["appearance_raw"] - after["appearance_raw"]).abs().max() > 1e-3

    stopped = train(build_run(config(6)), tmp_path, progress=False)      # interrupted 6 steps into the polish
    resumed = build_run(config(15))
    resume_from(resumed, tmp_path)
    assert resumed.step == 26
    train(resumed, tmp_path, progress=False)
    for name, value in polished.field.state_dict().items():
        assert torch.equal(value, resumed.field.state_dict()[name]), name
    assert stopped.step == 26


def test_a_run_in_its_polish_takes_no_more_steps(capsys, tmp_path):
    d = tmp_path / "run"
    generate(d, steps=10, extra=["--polish-steps", 4])
    before = (d / "checkpoint.safetensors").read_bytes()
    rc, _, err = sjc(capsys, "resume", d, "--steps", 20, "--quiet")
    assert_one_line_error(rc, err, "begun its appearance polish", "start a new run with --steps 20")
    assert (d / "checkpoint.safetensors").read_bytes() == before
    assert json.loads((d / "config.json").read_text())["optim"]["steps"] == 10


@pytest.mark.parametrize("polish_field,sjc_field,guide_attr", POLISH_FOLLOWS_SJC)
def test_a_run_from_before_a_polish_setting_resumes_with_the_sjc_steps_own(capsys, tiny_copy, monkeypatch,
                                                                          polish_field, sjc_field, guide_attr):
    from sjc.priors import ClosedFormPrior
    monkeypatch.setitem(ClosedFormPrior.defaults, polish_field, 7)   # a prior default that must not leak in
    config_path = tiny_copy / "config.json"
    cfg = json.loads(config_path.read_text())
    assert cfg["guidance"][polish_field] == cfg["guidance"][sjc_field] == 1
    del cfg["guidance"][polish_field]     # as written before the polish had a field of its own
    config_path.write_text(json.dumps(cfg))
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 40, "--quiet")
    assert rc == 0, err
    assert json.loads(config_path.read_text())["guidance"][polish_field] == 1


def test_polish_steps_are_recorded_and_a_run_from_before_them_resumes_without(capsys, tiny_copy, monkeypatch):
    from sjc.priors import ClosedFormPrior
    monkeypatch.setitem(ClosedFormPrior.defaults, "polish_steps", 5)
    config_path = tiny_copy / "config.json"
    cfg = json.loads(config_path.read_text())
    assert cfg["optim"]["polish_steps"] == 0 and cfg["guidance"]["polish_sigma_max"] == 0.5
    del cfg["optim"]["polish_steps"]                 # as written before the polish existed
    config_path.write_text(json.dumps(cfg))
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 40, "--quiet")
    assert rc == 0, err
    assert ckpt_step(tiny_copy) == 40
    assert json.loads(config_path.read_text())["optim"]["polish_steps"] == 0
    d = tiny_copy.parent / "new"
    generate(d, steps=10)                            # a new run takes the prior's polish default
    assert ckpt_step(d) == 15 and json.loads((d / "config.json").read_text())["optim"]["polish_steps"] == 5


def test_resume_may_change_what_a_run_writes_but_not_what_it_computes(capsys, tmp_path):
    d = tmp_path / "r"
    generate(d, steps=20)   # --no-video --no-mesh
    before = load_file(str(d / "checkpoint.safetensors"))
    rc, _, err = sjc(capsys, "resume", d, "--video", "--ckpt-every", 5)
    assert rc == 0, err
    assert video_frames(d / "turntable.mp4") > 0
    out = json.loads((d / "config.json").read_text())["output"]
    assert out["video"] is True and out["ckpt_every"] == 5 and out["mesh"] is False
    after = load_file(str(d / "checkpoint.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    rc, _, err = sjc(capsys, "resume", d, "--ckpt-every", 0)
    assert_one_line_error(rc, err, "--ckpt-every")
    assert json.loads((d / "config.json").read_text())["output"]["ckpt_every"] == 5
    for flag in ("--lr", "--guidance-scale", "--seed", "--prompt"):   # what would change the result is not a flag
        with pytest.raises(SystemExit):
            build_parser().parse_args(["resume", str(d), flag, "1"])


def test_a_run_trained_on_a_gpu_renders_and_exports_on_a_cpu(capsys, mesh_run, tmp_path):
    """A GPU run's folder (config --device cuda, a CUDA generator's 16-byte state in the checkpoint) renders and
    exports here; resuming it is one line that says where it can resume."""
    from safetensors.torch import save_file

    d = tmp_path / "gpu-run"
    shutil.copytree(mesh_run[0], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["output"]["device"] = "cuda"
    (d / "config.json").write_text(json.dumps(cfg))
    ckpt = d / "checkpoint.safetensors"
    with safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(ckpt))
    tensors["rng.noise"] = torch.zeros(16, dtype=torch.uint8)   # what a CUDA generator's get_state() holds
    save_file(tensors, str(ckpt), metadata=meta)
    for argv in (["export", d, "--out", tmp_path / "m.ply"], ["render", d, "--out", tmp_path / "v.mp4"]):
        rc, _, err = sjc(capsys, *argv)
        assert rc == 0, err
    assert trimesh.load(tmp_path / "m.ply").faces.shape[0] > 0 and video_frames(tmp_path / "v.mp4") == 4
    if not torch.cuda.is_available():   # (where one is, a CUDA generator takes the 16-byte state)
        rc, _, err = sjc(capsys, "resume", d, "--quiet")
        assert_one_line_error(rc, err, "was trained with --device cuda", "resume it where a CUDA GPU is visible")
        cfg["output"]["device"] = "auto"   # trained where auto meant cuda
        (d / "config.json").write_text(json.dumps(cfg))
        rc, _, err = sjc(capsys, "resume", d, "--quiet", "--steps", MESH_STEPS + 5)
        assert_one_line_error(rc, err, "random streams of a run on another kind of device", "render and export work")


@pytest.mark.parametrize("command", ["resume", "render", "export"])
def test_a_missing_run_folder_is_named_and_not_created(capsys, tmp_path, command):
    rc, _, err = sjc(capsys, command, tmp_path / "nowhere")
    assert_one_line_error(rc, err, "no run folder", str(tmp_path / "nowhere"), "sjc generate")
    assert not (tmp_path / "nowhere").exists()


def test_resume_folder_without_config(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    rc, _, err = sjc(capsys, "resume", tmp_path / "empty", "--quiet")
    assert_one_line_error(rc, err, "config.json", "not an sjc run folder")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_resume_corrupt_checkpoint(capsys, tiny_copy, damage):
    ck = tiny_copy / "checkpoint.safetensors"
    data = ck.read_bytes()
    ck.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 40, "--quiet")
    assert_one_line_error(rc, err, "corrupt", str(ck), "delete it")


def test_resume_checkpoint_from_another_config(capsys, tiny_copy):
    cfg = json.loads((tiny_copy / "config.json").read_text())
    cfg["field"]["grid_size"] = 16
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--quiet")
    assert_one_line_error(rc, err, "does not match its run config")


@pytest.mark.parametrize("text", ["{not json", "[1, 2, 3]", "", '{"prompt": ""}'])
def test_resume_garbage_config(capsys, tiny_copy, text):
    (tiny_copy / "config.json").write_text(text)
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--quiet")
    assert_one_line_error(rc, err, "config")
    assert ckpt_step(tiny_copy) == 30


@pytest.mark.parametrize("text", ['{"prompt": "a blue sphere", "field": 5}',
                                  '{"prompt": "a blue sphere", "optim": {"steps": "many"}}'])
def test_resume_config_of_wrong_shape(capsys, tiny_copy, text):
    (tiny_copy / "config.json").write_text(text)
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--quiet")
    assert_one_line_error(rc, err, "config")
