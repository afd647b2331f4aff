"""The SJC optimisation loop: render a view, score it with the 2D prior, chain through the renderer, step; then
the appearance polish, which does the same at small σ into the colours alone."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Callable, Optional

import torch

from .cameras import sample_train_cameras
from .checkpoint import checkpoint_metadata, checkpoint_path, load_checkpoint, save_checkpoint
from .config import RunConfig
from .field import VoxelField
from .guidance import view_prompt
from .priors import Prior
from .regularizers import center_depth_loss, emptiness_weight, rendered_emptiness
from .render import Renderer, render


@dataclass
class Run:
    """Everything a run needs, built from its config (sjc.build.build_run): prior, field, optimiser, the guides
    of the SJC steps and of the polish, the renderer and the RNG streams."""
    cfg: RunConfig
    prior: Prior
    field: VoxelField
    optimizer: torch.optim.Optimizer
    guide: Callable
    polish_guide: Callable   # the guide of the appearance polish: the same method at small σ
    renderer: Renderer
    generators: dict[str, torch.Generator]
    device: torch.device
    step: int = 0
    timings: dict = dc_field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return self.cfg.render.resolution

    def render(self, cams, subpixel: int = 1, resolution: Optional[int] = None, chunk: Optional[int] = None):
        """Render views with the run's renderer (at the prior's resolution unless given)."""
        r, res = self.cfg.render, resolution or self.resolution
        return render(self.field, cams, res, res, self.renderer, r.step_ratio, r.weight_threshold, r.far_depth,
                      subpixel, chunk)


def _camera_and_prompt(run: Run, step: int):
    """The step's training camera (drawn on the host: no sync) and its view-prefixed prompt; the occupancy grid
    refreshed every occupancy_every steps (in the polish once, after the geometry's last change)."""
    cfg = run.cfg
    cams_host = sample_train_cameras(1, cfg.camera, run.generators["camera"])
    prompt = view_prompt(cfg.prompt, cams_host, cfg.guidance.view_prompts, run.prior.views)
    if step % cfg.render.occupancy_every == 0 and step < cfg.optim.steps + cfg.render.occupancy_every \
            and run.renderer.occupancy:
        run.field.refresh_occupancy(cfg.render.occupancy_threshold)
    return cams_host.to(run.device), prompt


def sjc_step(run: Run, step: int) -> dict[str, torch.Tensor]:
    """One step of Score Jacobian Chaining; returns diagnostics (emptiness, score norm, opacity) as device tensors,
    which the caller may read when it likes (reading one waits for the device)."""
    cfg = run.cfg
    cams, prompt = _camera_and_prompt(run, step)
    run.optimizer.zero_grad(set_to_none=True)
    out = run.render(cams)
    grad = run.guide(out.image.detach(), cams, prompt, run.generators["noise"])   # 2D score, no U-Net Jacobian
    empty = rendered_emptiness(out)
    lam = emptiness_weight(cfg.reg.emptiness_weight, step, cfg.reg.emptiness_mult_step, cfg.reg.emptiness_mult)
    reg = lam * empty
    if cfg.reg.center_depth_weight:
        reg = reg + cfg.reg.center_depth_weight * center_depth_loss(out.depth, cfg.render.far_depth)
    # The chain rule as one vector–Jacobian product: ascend the 2D score through ∂x/∂θ, descend the regularisers.
    torch.autograd.backward([out.image, reg], [-grad, torch.ones_like(reg)])
    run.optimizer.step()
    return {"emptiness": empty.detach(), "grad_norm": grad.norm() / grad.numel() ** 0.5,
            "opacity": out.opacity.mean().detach()}


def polish_step(run: Run, step: int) -> dict[str, torch.Tensor]:
    """One step of the appearance polish (the steps past cfg.optim.steps): the score at small σ, chained into the
    appearance grid alone (the geometry is final, and no gradient of it is computed), from a fresh Adamax state."""
    if step == run.cfg.optim.steps:
        run.optimizer.state.pop(run.field.appearance_raw, None)
    cams, prompt = _camera_and_prompt(run, step)
    run.optimizer.zero_grad(set_to_none=True)
    with run.field.frozen_geometry():
        out = run.render(cams)
        grad = run.polish_guide(out.image.detach(), cams, prompt, run.generators["noise"])
        empty = rendered_emptiness(out)   # reported only: the regularisers shape the geometry
        torch.autograd.backward(out.image, -grad)
    run.optimizer.step()
    return {"emptiness": empty.detach(), "grad_norm": grad.norm() / grad.numel() ** 0.5,
            "opacity": out.opacity.mean().detach()}


def train(run: Run, out_dir: Optional[Path] = None, progress: bool = True,
          on_preview: Optional[Callable[[Run], None]] = None, on_step: Optional[Callable[[Run], None]] = None) -> Run:
    """Optimise from run.step through cfg.optim.steps and the polish steps, checkpointing into out_dir (if given)
    every ckpt_every steps and at the end; on_step(run) after every step (a progress report: keep it cheap)."""
    from tqdm import tqdm

    cfg = run.cfg
    total = cfg.optim.steps + cfg.optim.polish_steps
    phase = lambda: "sjc polish" if run.step >= cfg.optim.steps else "sjc"   # noqa: E731
    bar = tqdm(total=total, initial=run.step, disable=not progress, desc=phase(), unit="step", dynamic_ncols=True)
    t0, start = time.perf_counter(), run.step
    while run.step < total:
        terms = (sjc_step if run.step < cfg.optim.steps else polish_step)(run, run.step)
        run.step += 1
        bar.update(1)
        if run.step == cfg.optim.steps:
            bar.set_description(phase(), refresh=False)
        if run.step % 20 == 0 or run.step == total:
            bar.set_postfix({k: f"{float(v):.3g}" for k, v in terms.items()}, refresh=False)
        if out_dir is not None and (run.step % cfg.output.ckpt_every == 0 or run.step == total):
            save(run, out_dir)
        if on_preview is not None and run.step % cfg.output.preview_every == 0:
            on_preview(run)
        if on_step is not None:
            on_step(run)
    bar.close()
    elapsed = time.perf_counter() - t0
    run.timings.update(train_seconds=elapsed, steps_run=run.step - start,
                       seconds_per_step=elapsed / max(run.step - start, 1))
    return run


def save(run: Run, out_dir: Path) -> None:
    """Checkpoint the run (field, optimiser, step, RNG states, the renderer's name) into its folder, atomically."""
    save_checkpoint(checkpoint_path(out_dir), run.field, run.optimizer, run.step, run.generators,
                    renderer=run.renderer.name)


def resume_from(run: Run, out_dir: Path, field_only: bool = False) -> None:
    """Restore the run's state from its folder's checkpoint: the next step is the one the checkpoint stopped before
    (field_only: the field alone, enough to render or export it)."""
    path = checkpoint_path(out_dir)
    run.step = load_checkpoint(path, run.field, optimizer=None if field_only else run.optimizer,
                               generators=None if field_only else run.generators)
    renderer = checkpoint_metadata(path).get("renderer")   # (checkpoints before 2026-12-07 do not say)
    if not field_only and renderer not in (None, run.renderer.name):
        print(f"sjc: warning: this run was trained with the {renderer} renderer and goes on with the "
              f"{run.renderer.name} one here, so it will not match an uninterrupted run bit for bit", file=sys.stderr)
