"""Runs on disk, the library's front door: generate, resume and load a run folder, and what a finished run writes
(previews, summary images, turntable video, mesh, metrics). The CLI, `sjc eval` and any other product layer call
these; none has a run of its own."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from .build import build_run, resolve_device
from .cameras import Cameras, orbit_cameras, spiral_cameras
from .atomic import write_text
from .config import RunConfig
from .errors import SJCError
from .export import export_mesh, extract_mesh, normalize_map, save_image, save_video
from .metrics import evaluate_field, occupancy_level
from .priors import Prior
from .render import resolve_renderer
from .run_folder import CONFIG_NAME, RunFolder, out_dir_for, remove_outputs, replaces_a_run
from .train import Run, resume_from, train


def generate(cfg: RunConfig, progress: bool = True, prior: Optional[Prior] = None,
             on_step: Optional[Callable[[Run], None]] = None) -> tuple[Path, dict]:
    """Start a run from a config: validate, hold and create its folder, write config.json, train, finalise.

    prior: an instance to use instead of the one cfg names (a prior of your own, from Python); on_step: called
    after every training step (progress reports).
    """
    cfg.validate()
    out_dir = out_dir_for(cfg)
    # A folder that already holds a run is held (and checked) before any model loads: a second model on a busy GPU
    # could take a live run down. A new folder is made only once the prompt and prior have loaded.
    with RunFolder(out_dir) as folder:
        is_run = replaces_a_run(out_dir, cfg.output.overwrite)
        run = build_run(cfg, prior)
        if folder.create():   # held only now: another process may have begun a run here meanwhile
            is_run = replaces_a_run(out_dir, cfg.output.overwrite)
        if is_run:   # --overwrite of an sjc run
            remove_outputs(out_dir)
        cfg.output.overwrite = False   # a one-time action: a rerun from this config.json must not replace the run unasked
        cfg.save(out_dir / CONFIG_NAME)
        train(run, out_dir, progress, on_preview=lambda r: write_preview(r, out_dir), on_step=on_step)
        return out_dir, finalize(run, out_dir)


def resume(run_dir: Path, progress: bool = True, steps: Optional[int] = None, prior: Optional[Prior] = None,
           output: Optional[dict] = None, on_step: Optional[Callable[[Run], None]] = None) -> tuple[Path, dict]:
    """Continue an interrupted (or finished, with more --steps) run exactly where its checkpoint left off;
    `output` changes what it writes and how often (OutputConfig fields), never what it computes."""
    run_dir = Path(run_dir)
    with RunFolder(run_dir) as folder:   # held before its model loads, until it is finalised
        run = load_run(run_dir, prior=prior)   # (which says what is wrong with a folder that is not a run)
        folder.create(flag=None)
        more_steps = steps is not None and steps != run.cfg.optim.steps
        if more_steps:
            if run.step > run.cfg.optim.steps:   # its config could no longer say what it did: polish, then more SJC
                raise SJCError(f"this run has begun its appearance polish (step {run.step}, after "
                               f"{run.cfg.optim.steps} SJC steps), so it cannot take more --steps; start a new run "
                               f"with --steps {steps}")
            if steps < run.step:
                raise SJCError(f"--steps must be at least {run.step}, the step this run has already reached")
            run.cfg.optim.steps = steps
        for k, v in (output or {}).items():
            setattr(run.cfg.output, k, v)
        if more_steps or output:
            run.cfg.validate()
            run.cfg.save(run_dir / CONFIG_NAME)
        before = _read_json(run_dir / "metrics.json")
        train(run, run_dir, progress, on_preview=lambda r: write_preview(r, run_dir), on_step=on_step)
        if run.timings.get("steps_run") == 0 and before:   # a finished run, finalised again: keep its timings
            run.timings.update({k: before[k] for k in ("train_seconds", "steps_run", "seconds_per_step") if k in before})
        return run_dir, finalize(run, run_dir)


def load_run(run_dir: Path, restore: bool = True, prior: Optional[Prior] = None, device: Optional[str] = None,
             field_only: bool = False) -> Run:
    """Rebuild a run from its folder's config.json and (if restore) its checkpoint; `prior` as in generate.

    device: where to load it instead of the config's --device; field_only: restore the field alone, not the
    optimiser and random streams a resume needs, on the CPU if the run's GPU is not here (so a run trained on a
    GPU renders and exports on a CPU).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SJCError(f"no run folder at {run_dir}: give the folder that sjc generate wrote (e.g. outputs/a-blue-sphere)")
    if not (run_dir / CONFIG_NAME).is_file():
        raise SJCError(f"{run_dir} holds no {CONFIG_NAME}: it is not an sjc run folder")
    cfg = RunConfig.load(run_dir / CONFIG_NAME)
    if cfg.optim.polish_steps is None:   # a run written before the appearance polish existed: resumed without it
        cfg.optim.polish_steps = 0
    cfg.guidance.polish_follows_sjc()    # written before the polish had its own scale and K: it used the SJC steps'
    if not field_only:   # its types were checked as it loaded; a run that trains on must lie within the bounds too
        try:
            cfg.validate()
        except SJCError as e:
            raise SJCError(f"the run config in {run_dir} is invalid: {e}") from None
    gpu_run_here = cfg.output.device.startswith("cuda") and not torch.cuda.is_available()
    if device is not None:
        cfg.output.device = device
    elif field_only and gpu_run_here:   # rendering or exporting a GPU run on a CPU machine
        cfg.output.device = "cpu"
    elif restore and gpu_run_here:
        raise SJCError(f"{run_dir} was trained with --device {cfg.output.device}, where its optimiser and random "
                       f"streams belong: resume it where a CUDA GPU is visible (render and export work anywhere)")
    if field_only:   # the same images from another renderer where its own cannot run here (fused on a GPU)
        try:
            resolve_renderer(cfg.render.renderer, resolve_device(cfg.output.device))
        except SJCError:
            cfg.render.renderer = "fast"
    run = build_run(cfg, prior, bounds=not field_only)
    if restore:
        resume_from(run, run_dir, field_only)
    return run


# ------------------------------------------------------------------------------------------ what a run writes


def preview_cameras(fov: float, radius: float, device) -> Cameras:
    """Four fixed views (front, right, back, left) at 15° elevation for previews and summary images."""
    az = torch.tensor([0.0, 90.0, 180.0, 270.0])
    return orbit_cameras(az, torch.full_like(az, 15.0), torch.full_like(az, fov), radius).to(device)


@torch.no_grad()
def write_views(run: Run, path: Path):
    """Render the four fixed views, save them decoded to RGB at `path`, return the render."""
    out = run.render(preview_cameras(run.cfg.camera.test_fov, run.cfg.camera.radius, run.device))
    scale = 4 if run.prior.pixel_space else 1   # decoded latents are already large
    save_image(path, run.prior.decode(out.image), scale=scale)
    return out


def write_preview(run: Run, out_dir: Path) -> None:
    """previews/step_NNNNNN.png: the four fixed views at the current step."""
    write_views(run, out_dir / "previews" / f"step_{run.step:06d}.png")


@torch.no_grad()
def render_video(run: Run, path: Path, subpixel: int = 1, scale: int = 4) -> Path:
    """The spiral turntable: pixel-space fields are rendered at `scale`× resolution, latent fields decoded."""
    c = run.cfg.camera
    cams = spiral_cameras(c.video_frames, fov=c.test_fov, radius=c.radius, device=run.device)
    res = run.resolution * (scale if run.prior.pixel_space else 1)
    frames = []
    for i in range(len(cams)):
        out = run.render(cams[i], subpixel=subpixel, resolution=res)
        frames.append(run.prior.decode(out.image).cpu())
    return save_video(path, torch.cat(frames))


@torch.no_grad()
def run_mesh(run: Run, level: Optional[float] = None):
    """Marching cubes on the density at the surface level (default: the evaluation's), coloured by the field's appearance."""
    level = occupancy_level(run.field.grid_size) if level is None else level
    return extract_mesh(run.field.density_grid().cpu(), level,
                        lambda v: run.prior.feature_to_rgb(run.field.colour_at(v.to(run.device))).cpu())


def write_mesh(run: Run, out_dir: Path, formats=("glb", "ply"), level: Optional[float] = None) -> list[Path]:
    """The run's mesh as out_dir/mesh.<format>, one file per format."""
    mesh = run_mesh(run, level)
    return [export_mesh(mesh, out_dir / f"mesh.{fmt}", fmt) for fmt in formats]


def finalize(run: Run, out_dir: Path) -> dict:
    """Write the summary images, video, mesh and metrics.json of a finished run."""
    t0 = time.perf_counter()
    out = write_views(run, out_dir / "views.png")
    with torch.no_grad():
        save_image(out_dir / "depth.png", normalize_map(out.depth, 0.0, 2 * run.cfg.camera.radius), scale=4)
        save_image(out_dir / "opacity.png", normalize_map(out.opacity, 0.0, 1.0), scale=4)
    if run.cfg.output.video:
        try:
            render_video(run, out_dir / "turntable.mp4")
        except (OSError, RuntimeError) as e:   # ffmpeg or the disk: the trained field is safe in its checkpoint
            print(f"sjc: warning: no video written: {str(e).splitlines()[0][:200]}", file=sys.stderr)
    if run.cfg.output.mesh:
        try:
            write_mesh(run, out_dir)
        except SJCError as e:   # an empty field is a result, not a crash: say so and carry on
            print(f"sjc: warning: no mesh written: {e}", file=sys.stderr)
    metrics = {"prompt": run.cfg.prompt, "steps": run.step, **run.timings,
               "finalize_seconds": time.perf_counter() - t0, "device": str(run.device), "renderer": run.renderer.name}
    obj = run.prior.truth(run.cfg.prompt)
    if obj is not None:
        metrics["ground_truth"] = evaluate_field(run, obj)
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _read_json(path: Path) -> dict:
    """A JSON file's object, or {} if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
