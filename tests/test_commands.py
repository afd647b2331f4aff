"""The commands over a finished run and the others (render, export, sample2d, bench): what they write and the
one line each gives for bad input, before any work."""
import json
import sys

import pytest
import torch
import trimesh

from helpers import MESH_STEPS, TINY, NO_OUTPUTS, sjc, assert_one_line_error, temp_files, video_frames


def test_unknown_prior_lists_available(capsys, tmp_path):
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 5, "--prior", "nope",
                     "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, "'nope'", "available", "closed-form")
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


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_export_level_must_be_finite(capsys, tiny_run, value):
    rc, _, err = sjc(capsys, "export", tiny_run[0], "--format", "obj", f"--level={value}")
    assert_one_line_error(rc, err, "finite", "--level")
    assert not (tiny_run[0] / "mesh.obj").exists()


def test_render_subpixel(capsys, mesh_run):
    d, _ = mesh_run
    rc, out, err = sjc(capsys, "render", d, "--subpixel", 2)
    assert rc == 0, err
    path = d / "turntable_subpixel2.mp4"
    assert out.strip() == str(path)
    assert path.stat().st_size > 0 and video_frames(path) == 4


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


@pytest.mark.parametrize("value", ["0", "-1"])
def test_render_bad_subpixel(capsys, mesh_run, value):
    rc, _, err = sjc(capsys, "render", mesh_run[0], "--subpixel", value)
    assert_one_line_error(rc, err, "--subpixel", value)


def test_render_missing_folder(capsys, tmp_path):
    rc, _, err = sjc(capsys, "render", tmp_path / "nowhere")
    assert_one_line_error(rc, err, "no run folder")


def test_render_and_export_check_the_run_folder_before_any_work(capsys, tiny_copy, monkeypatch):
    import sjc.pipeline as pipeline
    import sjc.run_folder as run_folder

    monkeypatch.setattr(pipeline, "render_video", lambda *a, **k: pytest.fail("rendered before checking the folder"))
    monkeypatch.setattr(pipeline, "run_mesh", lambda *a, **k: pytest.fail("meshed before checking the folder"))

    def read_only(folder):
        raise OSError(30, "Read-only file system", str(folder))

    monkeypatch.setattr(run_folder, "remove_stale_temporaries", read_only)
    rc, _, err = sjc(capsys, "render", tiny_copy)
    assert_one_line_error(rc, err, f"cannot write to the output folder {tiny_copy}", "--out")
    rc, _, err = sjc(capsys, "export", tiny_copy)
    assert_one_line_error(rc, err, f"cannot write to the output folder {tiny_copy}", "--out")


@pytest.mark.parametrize("value", ["0", "-4"])
def test_sample2d_bad_resolution(capsys, tmp_path, value):
    rc, _, err = sjc(capsys, "sample2d", "a red cube", "--prior", "closed-form", f"--resolution={value}", "--n", 1,
                     "--steps", 1, "--out", tmp_path / "s.png")
    assert_one_line_error(rc, err, "--resolution", value)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("argv", [["--sigma-min", "500"], ["--sigma-max", "0.005"]])
def test_sample2d_sigma_range_must_hold_once_the_table_fills_the_other_end(capsys, tmp_path, argv):
    rc, _, err = sjc(capsys, "sample2d", "a red cube", "--n", 1, "--steps", 1, *argv, "--out", tmp_path / "s.png")
    assert_one_line_error(rc, err, "σ_min < σ_max", "--sigma-min")
    assert not (tmp_path / "s.png").exists()


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


def test_a_fused_run_renders_and_exports_where_the_kernels_cannot_be_built(capsys, mesh_run, tmp_path, monkeypatch):
    """render and export need the field, not the renderer it was trained with: a --renderer fused run falls back."""
    import shutil

    from sjc import fused

    d = tmp_path / "run"
    shutil.copytree(mesh_run[0], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["render"]["renderer"] = "fused"
    (d / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(fused, "available", lambda: False)
    rc, out, err = sjc(capsys, "export", d, "--out", tmp_path / "m.ply")
    assert rc == 0, err
    assert len(trimesh.load(tmp_path / "m.ply").vertices) > 0
    rc, _, err = sjc(capsys, "resume", d, "--steps", MESH_STEPS + 5, "--quiet")   # training still needs it
    assert_one_line_error(rc, err, "--renderer fused", "could not be built")


def test_a_run_beyond_todays_bounds_still_renders_and_exports_but_does_not_train_on(capsys, tiny_copy, tmp_path):
    cfg = json.loads((tiny_copy / "config.json").read_text())
    cfg["camera"]["elev_max"] = 100.0   # accepted by an older sjc
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    rc, out, err = sjc(capsys, "render", tiny_copy, "--out", tmp_path / "t.mp4")
    assert rc == 0, err
    assert video_frames(tmp_path / "t.mp4") == cfg["camera"]["video_frames"]
    rc, _, err = sjc(capsys, "resume", tiny_copy, "--steps", 40, "--quiet")
    assert_one_line_error(rc, err, "is invalid", "--elev-max must lie in [-90, 90], got 100")
