"""Helpers shared by the end-to-end tests: running `sjc` in-process, tiny run settings, checks of one-line errors
and of run folders, a made-up prior."""
import contextlib
import io
from pathlib import Path

import imageio
import torch
from safetensors.torch import load_file

from sjc.atomic import LOCK_NAME
from sjc.checkpoint import checkpoint_step
from sjc.cli import main


TINY = ["--prior", "closed-form", "--grid-size", "12", "--resolution", "8", "--ckpt-every", "10", "--preview-every", "1000",
        "--video-frames", "4", "--quiet"]

NO_OUTPUTS = ["--no-video", "--no-mesh"]

MESH_STEPS = 100   # measured: grid 12, res 8, 100 steps gives a meshable sphere for seeds 0-4 (seed 0 used)

EVAL = ["--steps", "20", "--grid-size", "12", "--resolution", "8"]

POLISH_FOLLOWS_SJC = [("polish_guidance_scale", "guidance_scale", "guidance"),
                      ("polish_num_noise", "num_noise", "num_noise")]

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

def fake_eval_cells(monkeypatch, trained):
    import sjc.evaluate as sjc_evaluate

    def fake_cell(args):
        _, prompt, variant, seed, _ = args
        trained.append((prompt, variant, seed))
        return {"prompt": prompt, "variant": variant, "seed": seed, "seconds": 1.0, "iou": 0.5 + seed / 10,
                "psnr": 20.0 + seed, "iou_rot": 0.5, "best_rotation": 0.0, "psnr_rot": 20.0}

    monkeypatch.setattr(sjc_evaluate, "eval_cell", fake_cell)

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
