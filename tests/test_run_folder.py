"""The run folder: what generate writes, one writer at a time (the folder lock), replacing a run or files that are
not one, a failed write or Ctrl-C as one line, atomic outputs and safe folder names."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import trimesh
from PIL import Image
from safetensors.torch import load_file

from helpers import (TINY, NO_OUTPUTS, MESH_STEPS, EVAL, run_main, sjc, generate, assert_one_line_error, ckpt_step, temp_files,
                     video_frames)


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


def test_unwritable_outputs_fail_before_any_work(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda *a: pytest.fail("trained before checking --out"))
    rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", *EVAL,
                     "--out", tmp_path / "afile" / "ev")
    assert_one_line_error(rc, err, "cannot write")
    rc, _, err = sjc(capsys, "sample2d", "--n", 1, "--out", tmp_path / "afile" / "s.png")
    assert_one_line_error(rc, err, "cannot write")


def test_an_unwritable_output_names_the_commands_own_flag(capsys, tmp_path):
    from sjc.errors import SJCError
    from sjc.run_folder import prepare_out_dir

    (tmp_path / "afile").write_text("x")
    rc, _, err = sjc(capsys, "prior", "dataset", "--views", 1, "--out", tmp_path / "afile" / "data")
    assert_one_line_error(rc, err, "cannot write", "choose another with --out")
    assert "--out-dir" not in err
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 2, "--out-dir", tmp_path / "afile" / "r")
    assert_one_line_error(rc, err, "cannot write", "choose another with --out-dir")
    with pytest.raises(SJCError, match="make it writable$"):   # a resumed run's folder is not the user's choice
        prepare_out_dir(tmp_path / "afile" / "r", None)


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
    from sjc.run_folder import remove_outputs

    remove_outputs(d)   # all but its config.json
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 3, *NO_OUTPUTS, "--out-dir", d)
    assert rc == 0, err
    # --overwrite replaces a user's files of those names, as asked.
    remove_outputs(d)
    (d / "views.png").write_text("my own file")
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 3, *NO_OUTPUTS, "--out-dir", d, "--overwrite")
    assert rc == 0, err
    assert (d / "views.png").read_bytes().startswith(b"\x89PNG")


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


def test_reading_a_run_keeps_a_live_writers_temporaries(capsys, tiny_run):
    """`sjc export` while `sjc generate` writes into the same folder must not delete the generate's temporaries;
    a dead writer's (a killed process) and an older sjc's (no writer named) are cleaned up."""
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


def test_run_folder_names_for_any_prompt():
    from sjc.run_folder import slugify

    assert slugify("A blue sphere!") == "a-blue-sphere" and slugify("café crème") == "cafe-creme"
    assert slugify("a" * 79 + " b") == "a" * 79   # cut at 80, never ending in '-'
    japanese, other = slugify("日本の赤い立方体"), slugify("中国的红色立方体")
    assert japanese.startswith("run-") and other.startswith("run-") and japanese != other


# ---------------------------------------------------------------------------------------------- held for the whole run


def assert_held(folder: Path, writer: str = "sjc generate or resume") -> None:
    """The folder's lock is taken: a second writer asking for it now is refused with its one line."""
    from sjc.atomic import folder_lock
    from sjc.errors import SJCError

    with pytest.raises(SJCError, match=f"in use by another {writer} that is still running"):
        with folder_lock(folder, writer):
            pass


@pytest.mark.parametrize("command", ["generate", "resume"])
def test_the_folder_is_held_while_the_run_trains_and_finalises(capsys, tiny_copy, monkeypatch, command):
    """generate and resume hold the run folder's lock for the whole of training and finalising, not only while
    they check and load it."""
    import sjc.pipeline as pipeline

    seen = []
    real_train, real_finalize = pipeline.train, pipeline.finalize

    def train(run, out_dir, *a, **k):
        assert_held(out_dir)
        seen.append("train")
        return real_train(run, out_dir, *a, **k)

    def finalize(run, out_dir):
        assert_held(out_dir)
        seen.append("finalize")
        return real_finalize(run, out_dir)

    monkeypatch.setattr(pipeline, "train", train)
    monkeypatch.setattr(pipeline, "finalize", finalize)
    argv = (["resume", tiny_copy, "--steps", 40, "--quiet"] if command == "resume" else
            ["generate", "a blue sphere", *TINY, "--steps", 20, *NO_OUTPUTS, "--out-dir", tiny_copy, "--overwrite"])
    rc, _, err = sjc(capsys, *argv)
    assert rc == 0, err
    assert seen == ["train", "finalize"]
    from sjc.atomic import folder_lock
    with folder_lock(tiny_copy):   # and released when the command ends
        pass


def test_prior_train_holds_its_folder_while_it_trains(tmp_path, monkeypatch):
    import sjc.prior_training as prior_training

    seen = []

    def fake_training(data, out, *a, **k):
        assert_held(out, "sjc prior train")
        seen.append(out)

    monkeypatch.setattr(prior_training, "dataset_file", lambda path: path)
    monkeypatch.setattr(prior_training, "load_dataset", lambda path: {})
    monkeypatch.setattr(prior_training, "_train_prior", fake_training)
    prior_training.train_prior(tmp_path / "data", tmp_path / "train", prior_training.TrainConfig())
    assert seen == [tmp_path / "train"]


def test_a_disk_error_or_ctrl_c_during_a_resume_is_one_line(capsys, tiny_copy, monkeypatch):
    """The resumed run is inside the run folder's context too: a full disk names the checkpoint that is kept, and
    Ctrl-C says how to go on (it holds a checkpoint)."""
    import sjc.pipeline as pipeline

    def full_disk(run, out_dir, *a, **k):
        raise OSError(28, "No space left on device", str(out_dir / "checkpoint.safetensors"))

    monkeypatch.setattr(pipeline, "train", full_disk)
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 40, "--quiet")
    assert_one_line_error(rc, err, f"writing the run in {tiny_copy} failed (No space left on device:",
                          "the checkpoint of step 30 is kept", f"sjc resume {tiny_copy}")

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train", ctrl_c)
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 40, "--quiet")
    assert rc == 130 and err == f"sjc: interrupted: the last checkpoint is kept, continue with 'sjc resume {tiny_copy}'\n"
    assert ckpt_step(tiny_copy) == 30


LIVE_STEPS = 3000


def test_a_second_writer_during_a_live_resume_stops_and_changes_nothing(capsys, tmp_path):
    """While `sjc resume` trains in another process, a second `sjc resume` of the folder and a `generate
    --overwrite` into it stop with one line; the live run ends exactly as an undisturbed resume does."""
    live, undisturbed = tmp_path / "live", tmp_path / "undisturbed"
    generate(live, steps=30, extra=["--ckpt-every", "10"])
    shutil.copytree(live, undisturbed)
    resume = ["resume", "--steps", str(LIVE_STEPS), "--ckpt-every", "50", "--quiet"]
    with open(tmp_path / "live.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sjc.cli", resume[0], str(live), *resume[1:]],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while ckpt_step(live) <= 30 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, "the live resume ended before a second writer could be started"
            config = (live / "config.json").read_bytes()
            rc, _, err = sjc(capsys, "resume", live, "--steps", LIVE_STEPS + 500, "--quiet")
            assert_one_line_error(rc, err, f"{live} is in use by another sjc generate or resume", "wait for it to end")
            rc, _, err = sjc(capsys, "generate", "a red cube", *TINY, "--steps", 20, *NO_OUTPUTS, "--out-dir", live,
                             "--overwrite")
            assert_one_line_error(rc, err, f"{live} is in use by another sjc generate or resume")
            assert (live / "config.json").read_bytes() == config and (live / "checkpoint.safetensors").exists()
            assert proc.poll() is None, "the second writers were refused only because the live one had ended"
        finally:
            proc.wait(timeout=300)
    assert proc.returncode == 0, (tmp_path / "live.log").read_text(errors="replace")
    rc, _, err = run_main([resume[0], undisturbed, *resume[1:]])
    assert rc == 0, err
    a, b = (load_file(str(d / "checkpoint.safetensors")) for d in (live, undisturbed))
    assert ckpt_step(live) == LIVE_STEPS and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((live / "config.json").read_text())["optim"]["steps"] == LIVE_STEPS
