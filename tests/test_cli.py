"""End-to-end tests of the `sjc` command line on tiny runs of the closed-form toy-world prior.

Runs are in-process (`sjc.cli.main`) except where a real process is needed (the SIGKILL test).
Every run is tiny (12³ voxels, 8×8 renders) so the whole file stays well under a minute on 2 CPU cores.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio
import pytest
import torch
import trimesh
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from sjc.atomic import LOCK_NAME
from sjc.checkpoint import checkpoint_step
from sjc.cli import build_parser, main

TINY = ["--prior", "closed-form", "--grid-size", "12", "--resolution", "8", "--ckpt-every", "10", "--preview-every", "1000",
        "--video-frames", "4", "--quiet"]
NO_OUTPUTS = ["--no-video", "--no-mesh"]
MESH_STEPS = 100   # measured: grid 12, res 8, 100 steps gives a meshable sphere for seeds 0-4 (seed 0 used)


# ---------------------------------------------------------------------------------------------- helpers


def run_main(argv):
    """main(argv) with stdout/stderr captured (usable from module-scoped fixtures, unlike capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def sjc(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def generate(out_dir, prompt="a blue sphere", steps=30, extra=(), outputs=False):
    rc, out, err = run_main(["generate", prompt, *TINY, "--steps", steps, "--out-dir", out_dir,
                             *([] if outputs else NO_OUTPUTS), *extra])
    assert rc == 0, err
    return out, err


def assert_one_line_error(rc, err, *hints):
    """rc != 0 and stderr is exactly one 'sjc: error: …' line, no traceback, containing every hint."""
    assert rc != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("sjc: error: "), lines[0]
    for h in hints:
        assert h.lower() in lines[0].lower(), f"{h!r} not in {lines[0]!r}"
    return lines[0]


def ckpt_step(run_dir) -> int:
    return checkpoint_step(Path(run_dir) / "checkpoint.safetensors")


def field_tensors(run_dir) -> dict:
    t = load_file(str(Path(run_dir) / "checkpoint.safetensors"))
    fields = {k: v for k, v in t.items() if k.startswith("field.")}
    assert fields, "checkpoint holds no field.* tensors"
    return fields


def max_field_diff(dir_a, dir_b) -> float:
    a, b = field_tensors(dir_a), field_tensors(dir_b)
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def temp_files(run_dir):
    """Hidden files a run left behind, but its writer lock (an empty file that stays, like any flock file)."""
    return [p.name for p in Path(run_dir).rglob("*") if p.name.startswith(".") and p.name != LOCK_NAME]


def video_frames(path) -> int:
    reader = imageio.v2.get_reader(path)
    try:
        return sum(1 for _ in reader)
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------------- shared runs


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory):
    """A full-output run long enough to produce a mesh: (run folder, stdout + stderr)."""
    d = tmp_path_factory.mktemp("mesh") / "run"
    out, err = generate(d, steps=MESH_STEPS, outputs=True)
    return d, out + err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 30-step run with video and mesh enabled (too short to mesh): (run folder, stdout + stderr)."""
    d = tmp_path_factory.mktemp("tiny") / "run"
    out, err = generate(d, steps=30, outputs=True)
    return d, out + err


@pytest.fixture
def tiny_copy(tiny_run, tmp_path):
    """A private copy of the tiny run folder that a test may damage."""
    d = tmp_path / "copy"
    shutil.copytree(tiny_run[0], d)
    return d


# ---------------------------------------------------------------------------------------------- 1. generate


def test_generate_writes_all_outputs(mesh_run):
    d, out = mesh_run
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["prompt"] == "a blue sphere"
    assert cfg["field"]["grid_size"] == 12 and cfg["render"]["resolution"] == 8
    assert cfg["optim"]["steps"] == MESH_STEPS
    assert ckpt_step(d) == MESH_STEPS
    for name in ("views.png", "depth.png", "opacity.png"):
        with Image.open(d / name) as im:
            assert im.format == "PNG" and im.size == (64, 64)   # 2×2 grid of 8×8 views, scaled ×4
    assert (d / "turntable.mp4").stat().st_size > 0
    assert video_frames(d / "turntable.mp4") == 4
    for name in ("mesh.glb", "mesh.ply"):
        mesh = trimesh.load(d / name, force="mesh")
        assert len(mesh.faces) > 0
        assert (abs(mesh.vertices) <= 1.0 + 1e-5).all()
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["steps"] == MESH_STEPS
    gt = metrics["ground_truth"]
    assert isinstance(gt["iou"], float) and isinstance(gt["psnr"], float)
    assert 0.2 < gt["iou"] <= 1.0, "100 steps of PAAS should recover a fair part of the sphere"
    assert 0.2 < gt["iou_fine"] <= 1.0 and f"IoU {gt['iou']:.3f} ({gt['iou_fine']:.3f} sampled 4× finer)" in out
    assert "warning" not in out
    assert f"done: {MESH_STEPS} steps" in out and str(d) in out
    assert temp_files(d) == []


def test_generate_tiny_run_warns_instead_of_mesh(tiny_run):
    d, out = tiny_run
    assert "sjc: warning: no mesh written" in out   # stdout today; stderr would be fine too
    assert not (d / "mesh.glb").exists() and not (d / "mesh.ply").exists()
    for name in ("config.json", "checkpoint.safetensors", "views.png", "depth.png", "opacity.png",
                 "turntable.mp4", "metrics.json"):
        assert (d / name).stat().st_size > 0, name
    gt = json.loads((d / "metrics.json").read_text())["ground_truth"]
    assert isinstance(gt["iou"], float) and isinstance(gt["psnr"], float)


def test_generate_no_video_no_mesh_flags(tmp_path):
    d = tmp_path / "run"
    generate(d, steps=MESH_STEPS // 5)
    assert not (d / "turntable.mp4").exists() and not list(d.glob("mesh.*"))
    assert (d / "views.png").exists() and (d / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------- 2. bad input


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(capsys, tmp_path, prompt):
    rc, _, err = sjc(capsys, "generate", prompt, *TINY, "--steps", 5, "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, "prompt is empty", 'sjc generate "a blue sphere"')
    assert not (tmp_path / "run").exists()


def test_unknown_prior_lists_available(capsys, tmp_path):
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 5, "--prior", "nope",
                     "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, "'nope'", "available", "closed-form")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag,value", [("--grid-size", "0"), ("--grid-size", "-3"), ("--grid-size", "1"),
                                        ("--steps", "0"), ("--resolution", "0")])
def test_bad_sizes(capsys, tmp_path, flag, value):
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 5, flag, value,
                     "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, flag, value)
    assert not (tmp_path / "run").exists()


def test_non_toy_prompt_with_toy_prior(capsys, tmp_path):
    rc, _, err = sjc(capsys, "generate", "a photo of a cat", *TINY, "--steps", 5, *NO_OUTPUTS,
                     "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, "a photo of a cat", "not a toy-world prompt", "a <colour> <shape>")
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_non_toy_prompt_fails_before_touching_the_folder(capsys, tmp_path):
    rc, _, err = sjc(capsys, "generate", "a photo of a cat", *TINY, "--steps", 5, *NO_OUTPUTS,
                     "--out-dir", tmp_path / "run")
    line = assert_one_line_error(rc, err, "'a photo of a cat'")
    assert " view of " not in line
    assert not (tmp_path / "run").exists()


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


def test_out_dir_under_a_regular_file(capsys, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    target = tmp_path / "afile" / "run"
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 5, *NO_OUTPUTS, "--out-dir", target)
    assert_one_line_error(rc, err, "cannot write to the output folder", str(target), "--out-dir")
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can write into a read-only folder")
def test_out_dir_read_only(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 5, *NO_OUTPUTS,
                         "--out-dir", ro / "run")
    finally:
        ro.chmod(0o700)
    assert_one_line_error(rc, err, "cannot write to the output folder", "--out-dir")


def test_generate_into_existing_run_needs_overwrite(capsys, tiny_copy):
    before = (tiny_copy / "checkpoint.safetensors").read_bytes()
    args = ["generate", "a blue sphere", *TINY, "--steps", 20, *NO_OUTPUTS, "--out-dir", tiny_copy]
    rc, _, err = sjc(capsys, *args)
    assert_one_line_error(rc, err, "already holds a run", f"sjc resume {tiny_copy}", "--overwrite")
    assert (tiny_copy / "checkpoint.safetensors").read_bytes() == before
    assert json.loads((tiny_copy / "config.json").read_text())["optim"]["steps"] == 30

    rc, _, err = sjc(capsys, *args, "--overwrite")
    assert rc == 0, err
    assert ckpt_step(tiny_copy) == 20
    assert json.loads((tiny_copy / "config.json").read_text())["optim"]["steps"] == 20
    assert json.loads((tiny_copy / "metrics.json").read_text())["steps"] == 20


def test_run_folder_in_use_is_left_alone(capsys, tiny_copy, monkeypatch):
    """While another process writes the run (it holds the folder's lock), generate --overwrite and resume refuse
    with one line, before loading any model, and change nothing; once it ends, resume works."""
    from filelock import FileLock

    import sjc.pipeline as pipeline

    before = {f.name: f.read_bytes() for f in tiny_copy.iterdir() if f.is_file()}
    with monkeypatch.context() as m, FileLock(tiny_copy / ".sjc-lock"):   # what a live generate holds
        m.setattr(pipeline, "build_run", lambda *a, **k: pytest.fail("loaded a model for a folder in use"))
        m.setattr(pipeline, "load_run", lambda *a, **k: pytest.fail("loaded a model for a folder in use"))
        rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 20, *NO_OUTPUTS, "--out-dir", tiny_copy,
                         "--overwrite")
        assert_one_line_error(rc, err, f"{tiny_copy} is in use by another sjc generate or resume")
        rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 40, "--quiet")
        assert_one_line_error(rc, err, "in use by another sjc generate or resume", "wait for it to end")
        assert {f.name: f.read_bytes() for f in tiny_copy.iterdir() if f.is_file()} == before
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 40, "--quiet")
    assert rc == 0, err
    assert ckpt_step(tiny_copy) == 40


def test_a_folder_that_cannot_be_locked_is_one_line(capsys, tiny_copy, monkeypatch):
    import filelock

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(filelock.FileLock, "acquire", denied)   # a read-only folder, another user's lock file
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--quiet")
    assert_one_line_error(rc, err, f"cannot lock {tiny_copy / '.sjc-lock'} for writing: Permission denied",
                          "make the folder writable")


def test_overwrite_removes_stale_mesh(capsys, mesh_run, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(mesh_run[0], d)
    mine = [d / "mesh.blend", d / "mesh.notes.txt", d / "previews" / "step_final_annotated.png"]
    for f in mine:   # a user's files beside the run, with names like the run's
        f.parent.mkdir(exist_ok=True)
        f.write_text("mine")
    rc, out, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 10, "--no-video",
                       "--out-dir", d, "--overwrite")
    assert rc == 0, err
    assert "no mesh written" in out + err
    assert sorted(d.glob("mesh.*")) == sorted(mine[:2]) and all(f.read_text() == "mine" for f in mine)


@pytest.mark.parametrize("flag,value", [("--renderer", "nope"), ("--device", "nope"), ("--step-ratio", "0"),
                                        ("--radius", "0"), ("--device", "meta"), ("--device", "mps"),
                                        ("--seed", "99999999999999999999"), ("--seed", "-1")])
def test_bad_render_settings(capsys, tmp_path, flag, value):
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 2, *NO_OUTPUTS, flag, value,
                     "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, flag)


# ---------------------------------------------------------------------------------------------- 3. determinism


def test_same_seed_same_field_other_seed_differs(tmp_path):
    generate(tmp_path / "a", steps=30)
    generate(tmp_path / "b", steps=30)
    generate(tmp_path / "c", steps=30, extra=["--seed", "1"])
    a, b = load_file(str(tmp_path / "a" / "checkpoint.safetensors")), load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for k in a:   # field, optimiser and RNG state all bit-identical
        assert torch.equal(a[k], b[k]), k
    assert max_field_diff(tmp_path / "a", tmp_path / "c") > 1e-3


# ---------------------------------------------------------------------------------------------- 4. SIGKILL + resume

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


# ---------------------------------------------------------------------------------------------- 5. resume --steps


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


# ---------------------------------------------------------------------------------------------- 5b. appearance polish


def test_polish_updates_only_the_appearance_and_resumes_exactly(tmp_path):
    """Steps past --steps move the appearance alone; a run stopped mid-polish and resumed ends bit-identical."""
    from sjc.config import RunConfig
    from sjc.train import build_run, resume_from, train

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


# (polish field, the SJC steps' field it falls back to, the attribute of a ScoreGuide that holds it)
POLISH_FOLLOWS_SJC = [("polish_guidance_scale", "guidance_scale", "guidance"),
                      ("polish_num_noise", "num_noise", "num_noise")]


@pytest.mark.parametrize("polish_field,sjc_field,guide_attr", POLISH_FOLLOWS_SJC)
def test_polish_setting_defaults_to_the_sjc_steps_own(polish_field, sjc_field, guide_attr):
    """Unset (and no prior default), the polish takes the SJC steps' scale or K; set, it changes the polish alone."""
    from sjc.config import RunConfig
    from sjc.train import build_run

    def run(polish_value):
        cfg = RunConfig(prompt="a blue sphere", prior="closed-form")
        cfg.field.grid_size, cfg.render.resolution = 12, 8
        setattr(cfg.guidance, sjc_field, 2)
        setattr(cfg.guidance, polish_field, polish_value)
        return build_run(cfg)

    unset, other = run(None), run(4)
    assert getattr(unset.cfg.guidance, polish_field) == 2            # resolved, so config.json records it
    assert getattr(unset.polish_guide, guide_attr) == 2 and getattr(other.polish_guide, guide_attr) == 4
    assert getattr(unset.guide, guide_attr) == getattr(other.guide, guide_attr) == 2


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


@pytest.mark.parametrize("flags,hint", [(["--polish-steps", "-1"], "--polish-steps"),
                                        (["--polish-sigma-min", "0.5", "--polish-sigma-max", "0.1"], "--polish-sigma"),
                                        (["--polish-guidance-scale", "-1"], "--polish-guidance-scale"),
                                        (["--polish-num-noise", "0"], "--polish-num-noise"),
                                        (["--guidance-scale", "-2"], "--guidance-scale")])
def test_bad_polish_settings(capsys, tmp_path, flags, hint):
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 5, "--out-dir", tmp_path / "r", *flags)
    assert_one_line_error(rc, err, hint)


# ---------------------------------------------------------------------------------------------- 6. export, render


def test_export_obj(capsys, mesh_run):
    d, _ = mesh_run
    rc, out, err = sjc(capsys, "export", d, "--format", "obj")
    assert rc == 0, err
    assert out.strip() == str(d / "mesh.obj")
    mesh = trimesh.load(d / "mesh.obj", force="mesh")
    assert len(mesh.faces) > 0
    assert temp_files(d) == []


def test_export_of_an_empty_field_is_one_line_error(capsys, tiny_run):
    rc, _, err = sjc(capsys, "export", tiny_run[0], "--format", "obj")
    assert_one_line_error(rc, err, "nothing to mesh")
    assert not (tiny_run[0] / "mesh.obj").exists()


def test_export_out_writes_elsewhere_and_keeps_the_runs_mesh(capsys, mesh_run, tmp_path):
    d, _ = mesh_run
    before = (d / "mesh.glb").read_bytes()
    rc, out, err = sjc(capsys, "export", d, "--out", tmp_path / "sub dir" / "low.ply", "--level", 1.0)
    assert rc == 0, err
    assert out.strip() == str(tmp_path / "sub dir" / "low.ply")
    low = trimesh.load(tmp_path / "sub dir" / "low.ply", force="mesh")
    default = trimesh.load(d / "mesh.glb", force="mesh")
    assert (d / "mesh.glb").read_bytes() == before
    assert low.volume > default.volume > 0   # a lower level encloses more


@pytest.mark.parametrize("argv,hints", [
    (["--out", "m.stl"], ["--out must name a .glb, .ply or .obj file", "m.stl"]),
    (["--out", "m.ply", "--format", "glb"], ["matching --format", "m.ply"]),
    (["--out", "adir"], ["--out must name"]),
])
def test_export_bad_out_fails_before_meshing(capsys, tiny_copy, tmp_path, monkeypatch, argv, hints):
    import sjc.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run_mesh", lambda *a, **k: pytest.fail("meshed before checking --out"))
    monkeypatch.chdir(tmp_path)
    rc, _, err = sjc(capsys, "export", tiny_copy, *argv)
    assert_one_line_error(rc, err, *hints)


@pytest.mark.parametrize("out,hints", [
    ("v.gif", ["--out must name a .mp4/.mkv/.mov file", "v.gif"]),
    ("noext", ["--out must name"]),
    ("adir.mp4", ["adir.mp4", "is a folder", "--out"]),
])
def test_render_bad_out_fails_before_rendering(capsys, tiny_copy, tmp_path, monkeypatch, out, hints):
    import sjc.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_run", lambda *a, **k: pytest.fail("loaded the run before checking --out"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir.mp4").mkdir()
    rc, _, err = sjc(capsys, "render", tiny_copy, "--out", out)
    assert_one_line_error(rc, err, *hints)


def test_render_subpixel(capsys, mesh_run):
    d, _ = mesh_run
    rc, out, err = sjc(capsys, "render", d, "--subpixel", 2)
    assert rc == 0, err
    path = d / "turntable_subpixel2.mp4"
    assert out.strip() == str(path)
    assert path.stat().st_size > 0 and video_frames(path) == 4


@pytest.mark.parametrize("value", ["0", "-1"])
def test_render_bad_subpixel(capsys, mesh_run, value):
    rc, _, err = sjc(capsys, "render", mesh_run[0], "--subpixel", value)
    assert_one_line_error(rc, err, "--subpixel", value)


def test_render_missing_folder(capsys, tmp_path):
    rc, _, err = sjc(capsys, "render", tmp_path / "nowhere")
    assert_one_line_error(rc, err, "no run folder")


# ---------------------------------------------------------------------------------------------- 7. eval

EVAL = ["--steps", "20", "--grid-size", "12", "--resolution", "8"]


def test_eval_writes_tables(capsys, tmp_path):
    prefix = tmp_path / "ev"
    rc, out, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", "oracle", *EVAL,
                       "--out", prefix)
    assert rc == 0, err
    md = (tmp_path / "ev.md").read_text()
    assert "paas" in md and "oracle" in md and "a blue sphere" in md
    data = json.loads((tmp_path / "ev.json").read_text())
    assert len(data["summary"]) == 2 and len(data["rows"]) == 2
    assert {s["variant"] for s in data["summary"]} == {"paas", "oracle"}
    for s in data["summary"]:
        assert isinstance(s["iou"], float) and isinstance(s["psnr"], float)
    assert data["config"]["optim"]["steps"] == 20
    assert "(2 cells)" in out
    assert "[2/2] a blue sphere |" in err and "ETA" in err   # one progress line per finished cell
    assert not (tmp_path / "ev.partial.jsonl").exists()


def test_eval_interrupted_keeps_finished_cells_and_resumes(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate

    trained = []

    def fake_cell(args, stop_at=None):
        _, prompt, variant, seed, _ = args
        if len(trained) == stop_at:
            raise KeyboardInterrupt
        trained.append((prompt, variant, seed))
        return {"prompt": prompt, "variant": variant, "seed": seed, "seconds": 1.0, "iou": 0.5 + seed / 10,
                "psnr": 20.0 + seed, "iou_rot": 0.5, "best_rotation": 0.0, "psnr_rot": 20.0}

    args = ["eval", "--prompts", "a blue sphere", "a red cube", "--variants", "paas", "--seeds", 2, *EVAL,
            "--out", tmp_path / "ev"]
    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda a: fake_cell(a, stop_at=3))
    rc, _, err = sjc(capsys, *args)
    assert rc == 130 and "ev.partial.jsonl" in err and "the same command resumes" in err
    assert len(trained) == 3 and not (tmp_path / "ev.json").exists()
    monkeypatch.setattr(sjc_evaluate, "eval_cell", fake_cell)
    rc, out, err = sjc(capsys, *args)
    assert rc == 0, err
    assert "3 of 4 cells already done" in err and "[4/4] a red cube | paas | seed 1" in err
    assert trained == [("a blue sphere", "paas", 0), ("a blue sphere", "paas", 1), ("a red cube", "paas", 0),
                       ("a red cube", "paas", 1)]   # every cell trained once
    data = json.loads((tmp_path / "ev.json").read_text())
    assert [(r["prompt"], r["seed"]) for r in data["rows"]] == [c[::2] for c in trained]
    assert data["summary"][1]["psnr"] == pytest.approx(20.5) and data["summary"][1]["iou_std"] == pytest.approx(0.05)
    assert not (tmp_path / "ev.partial.jsonl").exists()
    # a partial file of other settings is not mixed in; the error names the fields that differ
    other = json.loads(json.dumps(data["config"]))
    other["optim"]["steps"] += 1
    for header, hint in [({"config": other}, "other settings (optim.steps)"), ({"config": {"steps": 1}}, "other settings (camera")]:
        (tmp_path / "ev.partial.jsonl").write_text(json.dumps(header) + "\n")
        rc, _, err = sjc(capsys, *args)
        assert_one_line_error(rc, err, "ev.partial.jsonl", hint)


def test_eval_reuses_the_cells_of_an_earlier_eval_with_the_same_settings(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate

    trained = []

    def fake_cell(args):
        _, prompt, variant, seed, _ = args
        trained.append((prompt, variant, seed))
        return {"prompt": prompt, "variant": variant, "seed": seed, "seconds": 1.0, "iou": 0.5 + seed / 10,
                "psnr": 20.0 + seed + len(trained), "iou_rot": 0.5, "best_rotation": 0.0, "psnr_rot": 20.0}

    monkeypatch.setattr(sjc_evaluate, "eval_cell", fake_cell)
    prompts = ["--prompts", "a blue sphere", "a red cube", "--variants", "paas"]
    rc, _, err = sjc(capsys, "eval", *prompts, *EVAL, "--out", tmp_path / "seed0")
    assert rc == 0, err
    first = json.loads((tmp_path / "seed0.json").read_text())["rows"]
    trained.clear()
    rc, _, err = sjc(capsys, "eval", *prompts, "--seeds", 2, *EVAL, "--out", tmp_path / "ev",
                     "--reuse", tmp_path / "seed0.json")
    assert rc == 0, err
    assert "reusing 2 of 4 cells" in err and "already done" not in err   # reused, not resumed: no partial file
    assert trained == [("a blue sphere", "paas", 1), ("a red cube", "paas", 1)]   # seed 0 is not trained again
    rows = json.loads((tmp_path / "ev.json").read_text())["rows"]
    assert [(r["prompt"], r["seed"]) for r in rows] == [("a blue sphere", 0), ("a blue sphere", 1),
                                                         ("a red cube", 0), ("a red cube", 1)]
    assert [rows[0], rows[2]] == first   # the reused rows, as they were
    # other settings, or a file that is not an eval's .json: one line, before any training
    trained.clear()
    for bad, hint in [(tmp_path / "seed0.json", "optim.steps"), (tmp_path / "seed0.md", "not the .json"),
                      (tmp_path / "nothing.json", "no such file")]:
        rc, _, err = sjc(capsys, "eval", *prompts, "--seeds", 2, "--steps", 21, "--grid-size", "12",
                         "--resolution", "8", "--out", tmp_path / "ev2", "--reuse", bad)
        assert_one_line_error(rc, err, "--reuse", str(bad), hint)
    assert trained == [] and not (tmp_path / "ev2.json").exists()


def test_the_shipped_main_table_is_reusable_at_the_defaults(capsys, tmp_path, monkeypatch):
    """docs/eval.json's cells match today's defaults and weights, so `--reuse docs/eval.json` takes them, trains none."""
    import sjc.evaluate as sjc_evaluate

    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda *a: pytest.fail("trained a cell docs/eval.json holds"))
    shipped = Path(__file__).resolve().parents[1] / "docs" / "eval.json"
    rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "a red cube", "--variants", "paas", "--seeds", 3,
                     "--reuse", shipped, "--out", tmp_path / "ev")
    assert rc == 0, err
    rows = json.loads((tmp_path / "ev.json").read_text())["rows"]
    assert rows == [r for r in json.loads(shipped.read_text())["rows"] if r["prompt"] in ("a blue sphere", "a red cube")]


@pytest.mark.parametrize("prompts,variants,hint", [
    (["a blue sphere"], ["paas", "paas:bogus"], "'bogus'"),
    (["a blue sphere", "a photo of a cat"], ["paas"], "a photo of a cat"),
    (["a blue sphere"], ["nomethod"], "--method"),
])
def test_eval_bad_input_fails_before_training(capsys, tmp_path, monkeypatch, prompts, variants, hint):
    import sjc.evaluate as sjc_evaluate

    def no_training(*a, **k):
        raise AssertionError("eval started training before validating its input")

    monkeypatch.setattr(sjc_evaluate, "eval_cell", no_training)
    rc, _, err = sjc(capsys, "eval", "--prompts", *prompts, "--variants", *variants, *EVAL,
                     "--out", tmp_path / "ev")
    assert_one_line_error(rc, err, hint)
    assert not (tmp_path / "ev.md").exists() and not (tmp_path / "ev.json").exists()


def test_eval_zero_seeds(capsys, tmp_path):
    rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", "--seeds", 0, *EVAL,
                     "--out", tmp_path / "ev")
    assert_one_line_error(rc, err, "--seeds")
    assert not (tmp_path / "ev.md").exists()


# ---------------------------------------------------------------------------------------------- review fixes
def test_config_rerun_keeps_its_prompt_and_rejects_unknown_keys(capsys, tmp_path):
    rc, _, _ = sjc(capsys, "generate", "a red cube", *TINY, "--steps", 3, *NO_OUTPUTS, "--out-dir", tmp_path / "a")
    assert rc == 0
    rc, _, _ = sjc(capsys, "generate", "--config", tmp_path / "a" / "config.json", "--out-dir", tmp_path / "b")
    assert rc == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["prompt"] == "a red cube"
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    # Resolved: the σ range drawn (the closed-form prior's [0.5, 6], as table entries) and the view scheme used.
    g = cfg["guidance"]
    assert 0.5 <= g["sigma_min"] < 0.51 and 5.9 < g["sigma_max"] <= 6 and g["view_scheme"] == "reference"
    a, b = (load_file(tmp_path / d / "checkpoint.safetensors") for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # the rerun is the same run
    cfg["field"]["grid_sise"] = 7
    (tmp_path / "typo.json").write_text(json.dumps(cfg))
    rc, _, err = sjc(capsys, "generate", "--config", tmp_path / "typo.json", "--out-dir", tmp_path / "c")
    assert_one_line_error(rc, err, "grid_sise")


def test_a_config_rerun_with_other_settings_derives_what_the_run_filled_in(capsys, tmp_path):
    """config.json records what the run filled in itself; a new run from it derives again what depends on a flag
    given anew (the emptiness multiplier's step on --steps), keeps the rest and whatever was edited by hand."""
    rc, _, err = sjc(capsys, "generate", "a red cube", *TINY, "--steps", 30, *NO_OUTPUTS, "--out-dir", tmp_path / "a")
    assert rc == 0, err
    cfg_a = json.loads((tmp_path / "a" / "config.json").read_text())
    res = cfg_a["resolved"]
    assert res["reg.emptiness_mult_step"] == cfg_a["reg"]["emptiness_mult_step"] == 15
    assert res["optim.polish_steps"] == 0 and res["guidance.sigma_min"] == cfg_a["guidance"]["sigma_min"]
    assert not {"prior", "optim.steps", "field.grid_size"} & res.keys()   # given as flags

    def rerun(name, *flags, config=tmp_path / "a" / "config.json"):
        rc, _, err = sjc(capsys, "generate", "--config", config, *flags, "--out-dir", tmp_path / name, "--quiet")
        assert rc == 0, err
        return json.loads((tmp_path / name / "config.json").read_text())

    cfg_b = rerun("b", "--steps", 40)
    assert cfg_b["reg"]["emptiness_mult_step"] == 20 and cfg_b["optim"]["steps"] == 40   # half of the new steps
    assert cfg_b["resolved"] == {**res, "reg.emptiness_mult_step": 20}
    for name, flags in (("c", ["--no-video"]), ("d", ["--seed", "3"])):   # nothing filled in depends on these
        cfg = rerun(name, *flags)
        assert {**cfg, "output": None, "optim": None} == {**cfg_a, "output": None, "optim": None}
    edited = json.loads(json.dumps(cfg_a))
    edited["guidance"]["sigma_min"] = 1.0   # by hand, after the run
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    cfg_e = rerun("e", "--steps", 40, config=tmp_path / "edited.json")
    assert cfg_e["guidance"]["sigma_min"] == 1.0 and "guidance.sigma_min" not in cfg_e["resolved"]
    assert cfg_e["reg"]["emptiness_mult_step"] == 20 and cfg_e["guidance"]["sigma_max"] == cfg_a["guidance"]["sigma_max"]
    # One end of the σ range given anew: the other end as a fresh run with that flag gets it (the whole table's).
    cfg_f = rerun("f", "--sigma-min", "0.3")
    rc, _, err = sjc(capsys, "generate", "a red cube", *TINY, "--steps", 30, *NO_OUTPUTS, "--sigma-min", "0.3",
                     "--out-dir", tmp_path / "g")
    assert rc == 0, err
    fresh = json.loads((tmp_path / "g" / "config.json").read_text())
    assert cfg_f["guidance"]["sigma_max"] == fresh["guidance"]["sigma_max"] > cfg_a["guidance"]["sigma_max"]
    # The first form of the record, names only (written by this project for a day), still reads.
    first_form = {**cfg_a, "resolved": sorted(res)}
    (tmp_path / "first.json").write_text(json.dumps(first_form))
    assert rerun("h", "--steps", 40, config=tmp_path / "first.json")["resolved"] == cfg_b["resolved"]


def test_a_config_of_one_prior_given_another_takes_that_priors_defaults(tmp_path):
    """A closed-form run's config with --prior toy gets the toy prior's steps, polish and σ range, not the
    closed-form prior's; the settings given by hand stay."""
    from sjc.config import RunConfig
    from sjc.train import build_run

    a = RunConfig(prompt="a red cube", prior="closed-form")
    a.field.grid_size = 12
    build_run(a)
    assert a.optim.polish_steps == 0 and "optim.polish_steps" in a.resolved and "field.grid_size" not in a.resolved
    b = RunConfig.from_dict(json.loads(json.dumps(a.to_dict())))   # as read back from its config.json
    b.prior = "toy"
    b.forget_resolved(given={"prior"})
    build_run(b)
    toy = build_run(RunConfig(prompt="a red cube")).cfg
    for section, name in [("optim", "steps"), ("optim", "polish_steps"), ("guidance", "sigma_min"),
                          ("guidance", "sigma_max"), ("guidance", "guidance_scale"), ("guidance", "view_scheme"),
                          ("reg", "emptiness_weight"), ("reg", "emptiness_mult_step"), ("camera", "fov_min")]:
        assert getattr(getattr(b, section), name) == getattr(getattr(toy, section), name), name
    assert b.optim.polish_steps > 0 and b.field.grid_size == 12 and b.prior == "toy"


def test_unwritable_outputs_fail_before_any_work(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda *a: pytest.fail("trained before checking --out"))
    rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", *EVAL,
                     "--out", tmp_path / "afile" / "ev")
    assert_one_line_error(rc, err, "cannot write")
    rc, _, err = sjc(capsys, "sample2d", "--n", 1, "--out", tmp_path / "afile" / "s.png")
    assert_one_line_error(rc, err, "cannot write")


def test_out_dir_that_is_not_a_run_keeps_its_files(capsys, tmp_path, monkeypatch):
    import sjc.pipeline as pipeline

    d = tmp_path / "mine"
    d.mkdir()
    (d / "views.png").write_text("my own file")
    (d / "config.json").write_text('{"mine": true}')
    (d / ".notes.tmp1").write_text("my own temporary file")
    (d / "notes.txt").write_text("notes")
    with monkeypatch.context() as m:   # refused before any model loads
        m.setattr(pipeline, "build_run", lambda *a, **k: pytest.fail("loaded the prior before refusing the folder"))
        rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 3, *NO_OUTPUTS, "--out-dir", d)
        assert_one_line_error(rc, err, "not a run folder", "config.json, views.png", "--overwrite")
        (d / "config.json").unlink()   # without a config.json too
        rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 3, *NO_OUTPUTS, "--out-dir", d)
        assert_one_line_error(rc, err, "not a run folder", "views.png", "--overwrite")
        (d / "config.json").write_text('{"mine": true}')
    assert (d / "views.png").read_text() == "my own file" and (d / "config.json").read_text() == '{"mine": true}'
    (d / "views.png").unlink()
    (d / "config.json").unlink()
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 3, *NO_OUTPUTS, "--out-dir", d)
    assert rc == 0, err   # files a run does not write are no obstacle, and stay
    assert (d / ".notes.tmp1").read_text() == "my own temporary file" and (d / "notes.txt").read_text() == "notes"
    # A config.json left by a run interrupted before its first checkpoint is the run's own: a rerun replaces it.
    from sjc.pipeline import remove_outputs

    remove_outputs(d)   # all but its config.json
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 3, *NO_OUTPUTS, "--out-dir", d)
    assert rc == 0, err
    # --overwrite replaces a user's files of those names, as asked.
    remove_outputs(d)
    (d / "views.png").write_text("my own file")
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 3, *NO_OUTPUTS, "--out-dir", d, "--overwrite")
    assert rc == 0, err
    assert (d / "views.png").read_bytes().startswith(b"\x89PNG")


def test_emptiness_switch_is_fixed_at_creation(capsys, tiny_copy):
    cfg = json.loads((tiny_copy / "config.json").read_text())
    switch = cfg["reg"]["emptiness_mult_step"]
    assert switch == int(cfg["reg"]["emptiness_mult_after"] * cfg["optim"]["steps"])
    rc, _, _ = sjc(capsys, "resume", tiny_copy, "--steps", 2 * cfg["optim"]["steps"], "--quiet")
    assert rc == 0
    assert json.loads((tiny_copy / "config.json").read_text())["reg"]["emptiness_mult_step"] == switch


def test_eval_workers_end_when_the_eval_is_killed(tmp_path):
    """A SIGKILLed `sjc eval --jobs N` takes its worker processes with it (no orphans training cells)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from sjc.evaluate import die_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'), initializer=die_with_parent)\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 60)\n"
        "    time.sleep(0.5)\n"
        "    os._exit(9)\n")   # dies without any cleanup, as under SIGKILL
    with open(tmp_path / "out.txt", "w") as f:   # a file, not a pipe that an orphan would hold open
        subprocess.run([sys.executable, str(script)], stdout=f, timeout=60)
    worker = int((tmp_path / "out.txt").read_text().split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, 9)
        pytest.fail("the worker outlived its killed parent")


# ---------------------------------------------------------------------------------------------- review fixes, 2026-12-06
def test_a_config_whose_prompt_is_not_text_is_one_line_error(capsys, tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"prompt": 5}))
    rc, _, err = sjc(capsys, "generate", "--config", tmp_path / "p.json", *TINY, "--steps", 2, *NO_OUTPUTS,
                     "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, "prompt must be text", "5")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_export_level_must_be_finite(capsys, tiny_run, value):
    rc, _, err = sjc(capsys, "export", tiny_run[0], "--format", "obj", f"--level={value}")
    assert_one_line_error(rc, err, "finite", "--level")
    assert not (tiny_run[0] / "mesh.obj").exists()


@pytest.mark.parametrize("value", ["0", "-4"])
def test_sample2d_bad_resolution(capsys, tmp_path, value):
    rc, _, err = sjc(capsys, "sample2d", "a red cube", "--prior", "closed-form", f"--resolution={value}", "--n", 1,
                     "--steps", 1, "--out", tmp_path / "s.png")
    assert_one_line_error(rc, err, "--resolution", value)
    assert not (tmp_path / "s.png").exists()


def test_an_unwritable_output_names_the_commands_own_flag(capsys, tmp_path):
    from sjc.errors import SJCError
    from sjc.pipeline import prepare_out_dir

    (tmp_path / "afile").write_text("x")
    rc, _, err = sjc(capsys, "prior", "dataset", "--views", 1, "--out", tmp_path / "afile" / "data")
    assert_one_line_error(rc, err, "cannot write", "choose another with --out")
    assert "--out-dir" not in err
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 2, "--out-dir", tmp_path / "afile" / "r")
    assert_one_line_error(rc, err, "cannot write", "choose another with --out-dir")
    with pytest.raises(SJCError, match="make it writable$"):   # a resumed run's folder is not the user's choice
        prepare_out_dir(tmp_path / "afile" / "r", None)


@pytest.mark.parametrize("flags", [["--method", "sds"], ["--no-video"], ["--no-mesh"],
                                   ["--out-dir", "x"], ["--ckpt-every", "5"], ["--preview-every", "5"],
                                   ["--overwrite"]])
def test_eval_has_no_flags_for_settings_it_sets_per_cell_or_never_uses(capsys, tmp_path, flags):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--prompts", "a blue sphere", "--variants", "paas", *EVAL, *flags, "--out", str(tmp_path / "ev")])
    assert e.value.code == 2
    assert "unrecognized arguments: " + flags[0] in capsys.readouterr().err
    assert not (tmp_path / "ev.md").exists()


def test_eval_seed_is_not_read_as_seeds(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate

    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda *a: pytest.fail("trained with --seed"))
    rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", *EVAL, "--seed", 3,
                     "--out", tmp_path / "ev")
    assert_one_line_error(rc, err, "--seeds N", "not --seed 3")


@pytest.mark.parametrize("argv,hints", [
    (["--threads", "-1"], ["--threads", "-1"]),
    (["--repeats", "0"], ["--repeats", "0"]),
    (["--steps", "0"], ["--steps", "0"]),
    (["--plot", "p.png"], ["--plot is for the sweep suite only"]),
    (["--device", "cuda"], ["--device is for the sd suite only", "sjc bench sd --device"]),
    (["unet", "--tiny"], ["--tiny is for the sd suite only"]),
    (["sweep", "--grid", "64"], ["--grid is for the sd suite only"]),
    (["sd", "--tiny", "--latent", "0"], ["--latent must be a positive number", "0"]),
    (["sd", "--configs", "toy"], ["--configs is for the renderer suite only"]),
    (["sweep", "--plot", "afile/p.png"], ["cannot write", "--plot"]),
    (["--out", "afile/b.json"], ["cannot write", "--out"]),
])
def test_bench_bad_input_fails_before_any_timing(capsys, tmp_path, monkeypatch, argv, hints):
    import sjc.bench as sjc_bench

    for name in ("bench_renderers", "sweep_renderers", "bench_sd", "bench_unet_layout"):
        monkeypatch.setattr(sjc_bench, name, lambda *a, **k: pytest.fail("timed before checking its input"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    rc, _, err = sjc(capsys, "bench", *argv)
    assert_one_line_error(rc, err, *hints)


def test_bench_plot_without_matplotlib_fails_before_the_sweep(capsys, tmp_path, monkeypatch):
    import sjc.bench as sjc_bench

    monkeypatch.setattr(sjc_bench, "sweep_renderers", lambda *a, **k: pytest.fail("swept before checking --plot"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib → ImportError
    rc, _, err = sjc(capsys, "bench", "sweep", "--plot", tmp_path / "p.png")
    assert_one_line_error(rc, err, "--plot needs matplotlib", "pip install matplotlib")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only case")
def test_bench_sd_on_cuda_without_a_gpu_is_one_line_error(capsys, monkeypatch):
    import sjc.bench as sjc_bench

    monkeypatch.setattr(sjc_bench, "bench_sd", lambda *a, **k: pytest.fail("timed before checking --device"))
    rc, _, err = sjc(capsys, "bench", "sd", "--device", "cuda", "--tiny")
    assert_one_line_error(rc, err, "--device cuda", "--device cpu")


# ---------------------------------------------------------------------------------------------- the run on disk, 2026-12-06
def test_a_failed_write_mid_run_is_one_line_and_keeps_the_last_checkpoint(capsys, tmp_path, monkeypatch):
    import sjc.pipeline as pipeline

    def full_disk(run, out_dir):
        if run.step >= 20:
            raise OSError(28, "No space left on device", str(out_dir / "previews" / "step_000020.png"))

    monkeypatch.setattr(pipeline, "write_preview", full_disk)
    d = tmp_path / "run"
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 30, "--preview-every", 10, *NO_OUTPUTS,
                     "--out-dir", d)
    assert_one_line_error(rc, err, f"writing the run in {d} failed (No space left on device:",
                          "the checkpoint of step 20 is kept", f"sjc resume {d}")
    assert ckpt_step(d) == 20 and temp_files(d) == []
    monkeypatch.undo()
    rc, out, err = sjc(capsys, "resume", d, "--quiet")   # and the run goes on from there
    assert rc == 0, err
    assert ckpt_step(d) == 30 and "done: 30 steps" in out


def test_a_failed_checkpoint_write_is_one_line(capsys, tmp_path, monkeypatch):
    from safetensors import SafetensorError
    import sjc.train as sjc_train

    real = sjc_train.save_checkpoint

    def second_fails(path, *a, **k):
        if path.exists():
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
        real(path, *a, **k)

    monkeypatch.setattr(sjc_train, "save_checkpoint", second_fails)
    d = tmp_path / "run"
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 30, *NO_OUTPUTS, "--out-dir", d)
    assert_one_line_error(rc, err, "failed (Error while serializing", "the checkpoint of step 10 is kept")
    assert ckpt_step(d) == 10


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


def test_render_and_export_check_the_run_folder_before_any_work(capsys, tiny_copy, monkeypatch):
    import sjc.pipeline as pipeline

    monkeypatch.setattr(pipeline, "render_video", lambda *a, **k: pytest.fail("rendered before checking the folder"))
    monkeypatch.setattr(pipeline, "run_mesh", lambda *a, **k: pytest.fail("meshed before checking the folder"))

    def read_only(folder):
        raise OSError(30, "Read-only file system", str(folder))

    monkeypatch.setattr(pipeline, "remove_stale_temporaries", read_only)
    rc, _, err = sjc(capsys, "render", tiny_copy)
    assert_one_line_error(rc, err, f"cannot write to the output folder {tiny_copy}", "--out")
    rc, _, err = sjc(capsys, "export", tiny_copy)
    assert_one_line_error(rc, err, f"cannot write to the output folder {tiny_copy}", "--out")


def test_overwrite_is_not_recorded_so_a_rerun_from_the_config_keeps_the_run(capsys, tiny_copy):
    before = (tiny_copy / "checkpoint.safetensors").read_bytes()
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 20, *NO_OUTPUTS, "--out-dir", tiny_copy,
                     "--overwrite")
    assert rc == 0, err
    assert json.loads((tiny_copy / "config.json").read_text())["output"]["overwrite"] is False
    replaced = (tiny_copy / "checkpoint.safetensors").read_bytes()
    assert replaced != before
    rc, _, err = sjc(capsys, "generate", "--config", tiny_copy / "config.json", "--seed", 7)
    assert_one_line_error(rc, err, "already holds a run", "--overwrite")
    assert (tiny_copy / "checkpoint.safetensors").read_bytes() == replaced


def test_a_run_in_its_polish_takes_no_more_steps(capsys, tmp_path):
    d = tmp_path / "run"
    generate(d, steps=10, extra=["--polish-steps", 4])
    before = (d / "checkpoint.safetensors").read_bytes()
    rc, _, err = sjc(capsys, "resume", d, "--steps", 20, "--quiet")
    assert_one_line_error(rc, err, "begun its appearance polish", "start a new run with --steps 20")
    assert (d / "checkpoint.safetensors").read_bytes() == before
    assert json.loads((d / "config.json").read_text())["optim"]["steps"] == 10


@pytest.mark.parametrize("cause", [False, True])
def test_ctrl_c_says_whether_there_is_anything_to_resume(capsys, tmp_path, monkeypatch, cause):
    import sjc.pipeline as pipeline

    wrote = []

    def interrupted(run, out_dir, *a, **k):
        if wrote:   # the second command: as if stopped after its first checkpoint
            (out_dir / "checkpoint.safetensors").write_bytes(b"")
        if not cause:
            raise KeyboardInterrupt
        try:   # Ctrl-C inside torch's C++ code can come back as another error caused by it
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise RuntimeError("interrupted in an op") from e

    monkeypatch.setattr(pipeline, "train", interrupted)
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 30, *NO_OUTPUTS, "--out-dir", tmp_path / "r")
    assert rc == 130 and "Traceback" not in err
    assert err.startswith("sjc: interrupted: no checkpoint had been written yet") and err.count("\n") == 1
    # Interrupted after a checkpoint: it names the run folder to resume.
    wrote.append(True)
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 30, *NO_OUTPUTS, "--out-dir", tmp_path / "r2")
    assert rc == 130 and err == f"sjc: interrupted: the last checkpoint is kept, continue with 'sjc resume {tmp_path / 'r2'}'\n"


def test_images_are_written_atomically(tmp_path, monkeypatch):
    from PIL import Image as PILImage
    from sjc.export import save_image

    path = save_image(tmp_path / "v.png", torch.zeros(3, 4, 4))
    before = path.read_bytes()

    def half_then_die(self, fp, *a, **k):
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(PILImage.Image, "save", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_image(path, torch.ones(3, 4, 4))
    assert path.read_bytes() == before and temp_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------- eval bookkeeping, 2026-12-06
def fake_eval_cells(monkeypatch, trained):
    import sjc.evaluate as sjc_evaluate

    def fake_cell(args):
        _, prompt, variant, seed, _ = args
        trained.append((prompt, variant, seed))
        return {"prompt": prompt, "variant": variant, "seed": seed, "seconds": 1.0, "iou": 0.5 + seed / 10,
                "psnr": 20.0 + seed, "iou_rot": 0.5, "best_rotation": 0.0, "psnr_rot": 20.0}

    monkeypatch.setattr(sjc_evaluate, "eval_cell", fake_cell)


def test_eval_with_more_jobs_than_cells_gives_the_cells_every_thread(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate

    threads = []
    fake_eval_cells(monkeypatch, [])
    fake = sjc_evaluate.eval_cell
    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda args: threads.append(args[-1]) or fake(args))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:   # one cell, two jobs: one worker, in this process, with both threads (not one thread, one idle worker)
        rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", *EVAL, "--jobs", 2,
                         "--out", tmp_path / "ev")
    finally:
        torch.set_num_threads(before)
    assert rc == 0, err
    assert threads == [2]


def test_eval_reuse_compares_the_prior_weights_not_their_path(capsys, tmp_path, monkeypatch):
    from sjc.priors.text_unet import BUILTIN_TOY_MODEL

    trained = []
    fake_eval_cells(monkeypatch, trained)
    prompts = ["--prompts", "a blue sphere", "--variants", "paas"]
    assert sjc(capsys, "eval", *prompts, *EVAL, "--out", tmp_path / "seed0")[0] == 0
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(BUILTIN_TOY_MODEL, same)
    shutil.copytree(BUILTIN_TOY_MODEL, other)
    cfg = other / "scheduler" / "scheduler_config.json"
    cfg.write_text(cfg.read_text() + " ")   # one byte more: other files, so other cells
    trained.clear()
    rc, _, err = sjc(capsys, "eval", *prompts, *EVAL, "--model", same, "--out", tmp_path / "a",
                     "--reuse", tmp_path / "seed0.json")
    assert rc == 0 and "reusing 1 of 1 cells" in err and trained == []
    rc, _, err = sjc(capsys, "eval", *prompts, *EVAL, "--model", other, "--out", tmp_path / "b",
                     "--reuse", tmp_path / "seed0.json")
    assert_one_line_error(rc, err, "other settings (prior_weights)")
    data = json.loads((tmp_path / "seed0.json").read_text())
    del data["config"]["prior_weights"]   # as written before 2026-12-06
    (tmp_path / "old.json").write_text(json.dumps(data))
    rc, _, err = sjc(capsys, "eval", *prompts, *EVAL, "--out", tmp_path / "c", "--reuse", tmp_path / "old.json")
    assert_one_line_error(rc, err, "none recorded, so its prior cannot be checked")
    assert trained == []


def test_eval_trains_a_repeated_prompt_or_variant_once_and_labels_its_spread(capsys, tmp_path, monkeypatch):
    trained = []
    fake_eval_cells(monkeypatch, trained)
    rc, out, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "a blue sphere", "--variants", "paas", "paas",
                       "--seeds", 2, *EVAL, "--out", tmp_path / "ev")
    assert rc == 0, err
    assert trained == [("a blue sphere", "paas", 0), ("a blue sphere", "paas", 1)]
    data = json.loads((tmp_path / "ev.json").read_text())
    assert len(data["rows"]) == 2 and [s["seeds"] for s in data["summary"]] == [2]
    assert data["summary"][0]["psnr_std"] == pytest.approx(0.5)   # population SD of 20 and 21
    md = (tmp_path / "ev.md").read_text()
    assert sum(line.startswith("| a blue sphere | paas |") for line in md.splitlines()) == 1
    assert sum(line.startswith("| paas |") for line in md.splitlines()) == 1 and "20.50 ± 0.50" in md
    assert md.rstrip().endswith("± is the population standard deviation over the seeds (divided by n, not n − 1).")
    assert "(2 cells)" in out


# ---------------------------------------------------------------------------------------------- a prior of one's own
class GreenDisc:
    """A made-up prior for the extension tests: every denoised view is a green disc on white."""

    @staticmethod
    def make():
        from sjc.priors import Prior

        class GreenDiscPrior(Prior):
            name = "green-disc"
            defaults = {"grid_size": 12, "steps": 20, "guidance_scale": 1.0, "emptiness_weight": 1.0,
                        "fov_min": 45.0, "fov_max": 55.0}
            background_init = 1.0
            height = width = 8

            def __init__(self):
                super().__init__()
                self.sigmas = torch.linspace(0.05, 2.0, 50)
                ys, xs = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
                disc = (xs ** 2 + ys ** 2 < 0.4).float()
                self.target = torch.stack([1 - 2 * disc, torch.ones(8, 8), 1 - 2 * disc])[None]

            def encode(self, prompt):
                return None

            def D(self, x, sigma, cond=None, guidance=None):
                return self.target.expand_as(x)

        return GreenDiscPrior


def test_a_new_prior_is_one_class_and_one_registry_entry(capsys, tmp_path, monkeypatch):
    import sjc.priors as priors

    cls = GreenDisc.make()
    monkeypatch.setitem(priors.PRIORS, "green-disc", lambda cfg, device: cls())
    d = tmp_path / "run"
    rc, out, err = sjc(capsys, "generate", "a green disc", "--prior", "green-disc", "--quiet", *NO_OUTPUTS,
                       "--out-dir", d, "--ckpt-every", 5)
    assert rc == 0, err
    assert json.loads((d / "config.json").read_text())["prior"] == "green-disc" and ckpt_step(d) == 20
    rc, out, err = sjc(capsys, "resume", d, "--steps", 30, "--quiet")
    assert rc == 0 and ckpt_step(d) == 30, err
    rc, _, err = sjc(capsys, "generate", "x", "--prior", "nope", "--out-dir", tmp_path / "n")
    assert_one_line_error(rc, err, "available: toy, closed-form, sd, unet2d, green-disc")


def test_a_prior_instance_goes_through_generate_resume_and_load_run(tmp_path):
    from sjc.config import RunConfig
    from sjc.pipeline import generate, load_run, resume

    cls = GreenDisc.make()
    cfg = RunConfig(prompt="a green disc")
    cfg.output.out_dir, cfg.output.video, cfg.output.mesh, cfg.optim.steps = str(tmp_path / "r"), False, False, 10
    out_dir, metrics = generate(cfg, progress=False, prior=cls())
    assert metrics["steps"] == 10 and (out_dir / "views.png").is_file()
    _, metrics = resume(out_dir, progress=False, steps=15, prior=cls())
    assert metrics["steps"] == 15
    run = load_run(out_dir, prior=cls())
    assert run.step == 15 and run.prior.name == "green-disc"
    img = run.prior.decode(run.render(__import__("sjc.pipeline").pipeline.preview_cameras(50.0, 1.5, "cpu")).image)
    assert img.shape == (4, 3, 8, 8)
    assert json.loads((out_dir / "config.json").read_text())["prior"] == "green-disc"
    from sjc.errors import SJCError

    cfg = RunConfig(prompt="a green disc", prior="toy")   # config.json would name a prior that did not run
    cfg.output.out_dir = str(tmp_path / "r2")
    with pytest.raises(SJCError, match="names prior 'toy' but the prior given is 'green-disc'"):
        generate(cfg, progress=False, prior=cls())
    assert not (tmp_path / "r2").exists()
    with pytest.raises(SJCError, match=r"unknown prior 'green-disc'.*prior=it"):   # the command line cannot
        load_run(out_dir)


def test_a_prior_with_few_defaults_takes_the_reference_ones(tmp_path):
    """A prior that sets only some defaults (as the README invites) gets the reference values for the rest; one
    whose config_defaults() leaves a needed field out fails with one line naming its flag, before any folder."""
    from sjc.config import RunConfig
    from sjc.errors import SJCError
    from sjc.pipeline import generate

    base = GreenDisc.make()

    class Few(base):
        defaults = {"grid_size": 12, "steps": 5}

    class Broken(base):
        def config_defaults(self):
            return {k: v for k, v in super().config_defaults().items() if k != "fov_max"}

    cfg = RunConfig(prompt="a green disc")
    cfg.output.out_dir, cfg.output.video, cfg.output.mesh = str(tmp_path / "few"), False, False
    out_dir, metrics = generate(cfg, progress=False, prior=Few())
    saved = json.loads((out_dir / "config.json").read_text())
    assert metrics["steps"] == 5 and saved["field"]["grid_size"] == 12
    assert (saved["camera"]["fov_min"], saved["camera"]["fov_max"], saved["guidance"]["guidance_scale"],
            saved["reg"]["emptiness_weight"]) == (40.0, 70.0, 1.0, 1.0)
    cfg = RunConfig(prompt="a green disc")
    cfg.output.out_dir = str(tmp_path / "broken")
    with pytest.raises(SJCError, match="the green-disc prior gives no default for --fov-max: give them on the command"):
        generate(cfg, progress=False, prior=Broken())
    assert not (tmp_path / "broken").exists()


def test_reading_a_run_keeps_a_live_writers_temporaries(capsys, tiny_run):
    """`sjc export` while `sjc generate` writes into the same folder must not delete the generate's temporaries;
    a dead writer's (a killed process) and an older sjc's (no writer named) are cleaned up."""
    import subprocess

    from sjc.atomic import TMP_MARK, atomic_path

    run_dir, _ = tiny_run
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = run_dir / f".checkpoint.safetensors{TMP_MARK}{dead.pid}-abc.safetensors"
    old_style = run_dir / f".metrics.json{TMP_MARK}xyz.json"
    for f in (stale, old_style):
        f.write_bytes(b"half")
    with atomic_path(run_dir / "checkpoint_demo.safetensors") as live:   # as a running generate holds it
        live.write_bytes(b"being written")
        sjc(capsys, "export", run_dir, "--level", "0.5", "--format", "ply")
        assert live.exists(), "export deleted a live writer's temporary"
    assert (run_dir / "checkpoint_demo.safetensors").read_bytes() == b"being written"
    assert not stale.exists() and not old_style.exists()
    (run_dir / "checkpoint_demo.safetensors").unlink()
    (run_dir / "mesh.ply").unlink(missing_ok=True)


@pytest.mark.parametrize("argv,flag", [
    (["sample2d", "a red cube", "--guidance-scale", "nan"], "--guidance-scale"),
    (["sample2d", "a red cube", "--sigma-max", "inf"], "--sigma-max"),
    (["paas2d", "a red cube", "--lr", "nan"], "--lr"),
    (["prior", "train", "--lr", "inf"], "--lr"),
    (["prior", "train", "--timestep-power", "nan"], "--timestep-power"),
    (["generate", "a red cube", "--emptiness-weight=-inf"], "--emptiness-weight"),
])
def test_a_number_that_is_not_finite_is_one_line_naming_its_flag(capsys, argv, flag):
    rc, _, err = sjc(capsys, *argv)
    assert_one_line_error(rc, err, flag, "must be a finite number")


@pytest.mark.parametrize("argv", [["--sigma-min", "500"], ["--sigma-max", "0.005"]])
def test_sample2d_sigma_range_must_hold_once_the_table_fills_the_other_end(capsys, tmp_path, argv):
    rc, _, err = sjc(capsys, "sample2d", "a red cube", "--n", 1, "--steps", 1, *argv, "--out", tmp_path / "s.png")
    assert_one_line_error(rc, err, "σ_min < σ_max", "--sigma-min")
    assert not (tmp_path / "s.png").exists()


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


def test_run_folder_names_for_any_prompt():
    from sjc.pipeline import slugify

    assert slugify("A blue sphere!") == "a-blue-sphere" and slugify("café crème") == "cafe-creme"
    assert slugify("a" * 79 + " b") == "a" * 79   # cut at 80, never ending in '-'
    japanese, other = slugify("日本の赤い立方体"), slugify("中国的红色立方体")
    assert japanese.startswith("run-") and other.startswith("run-") and japanese != other


def test_help_says_what_each_flag_is_and_what_unset_means(capsys):
    """generate --help shows each prior's defaults for the flags left unset; prior train/dataset flags say what
    they are (their dataclass comments), not only their default."""
    from sjc.priors.text_unet import PixelTextPrior

    for argv in (["generate", "--help"], ["prior", "train", "--help"], ["prior", "dataset", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        if argv[0] == "generate":
            assert f"toy: --grid-size {PixelTextPrior.defaults['grid_size']}, --steps {PixelTextPrior.defaults['steps']}" in text
            assert "see above" not in text
        elif argv[1] == "train":
            assert "--timestep-power TIMESTEP_POWER t = ⌊T·u^p⌋" in text and "--batch BATCH images per step (default 64)" in text
        else:
            assert "--views VIEWS random cameras per shape (default 2000)" in text
