"""The SJC optimisation loop: render a view, score it with the 2D prior, chain through the renderer, step."""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Callable, Optional

import torch

from .allocator import keep_freed_memory
from .cameras import sample_train_cameras
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig, flag_name, resolve_defaults
from .errors import SJCError
from .field import VoxelField
from .guidance import OracleGuide, ScoreGuide, prompt_variants, view_prompt
from .optim import FusedAdamax
from .priors import Prior, load_prior, train_sigmas
from .regularizers import center_depth_loss, emptiness_weight
from .render import render, uses_occupancy


@dataclass
class Run:
    """Everything a run needs, built from its config: prior, field, optimiser, guide and RNG streams."""
    cfg: RunConfig
    prior: Prior
    field: VoxelField
    optimizer: torch.optim.Optimizer
    guide: Callable
    polish_guide: Callable   # the guide of the appearance polish: the same method at small σ
    generators: dict[str, torch.Generator]
    device: torch.device
    step: int = 0
    timings: dict = dc_field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return self.cfg.render.resolution

    def render(self, cams, subpixel: int = 1, resolution: Optional[int] = None, chunk: Optional[int] = None):
        """Render views with the run's renderer settings (at the prior's resolution unless given)."""
        r, res = self.cfg.render, resolution or self.resolution
        return render(self.field, cams, res, res, r.step_ratio, r.weight_threshold, r.far_depth, r.renderer,
                      subpixel, chunk, self.cfg.reg.emptiness_scale)


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SJCError(f"unknown --device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):   # mps, meta, xpu…: the renderer and priors are written for these two
        raise SJCError(f"--device {name}: sjc runs on cpu or cuda (cuda:N); use --device cpu, cuda or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SJCError(f"--device {name}: no CUDA GPU is visible to torch; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SJCError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def build_optimizer(field: VoxelField, cfg: RunConfig) -> torch.optim.Optimizer:
    """Adamax over the field's parameter groups (fused on the CPU; torch's multi-tensor form elsewhere)."""
    return FusedAdamax(field.param_groups(cfg.optim.lr, cfg.optim.bg_lr), foreach=True)


def build_run(cfg: RunConfig, prior: Optional[Prior] = None) -> Run:
    """Instantiate a fresh run (step 0) from a config; fills the prior's defaults into cfg (resolved in place)."""
    device = resolve_device(cfg.output.device)
    if device.type == "cpu":
        keep_freed_memory()
    if prior is not None and cfg.prior and cfg.prior != prior.name:   # config.json must name the prior that ran
        raise SJCError(f"the config names prior {cfg.prior!r} but the prior given is {prior.name!r}: leave the "
                       f"config's prior unset, or give the prior it names")
    prior = prior or load_prior(cfg, device)
    resolve_for_prior(cfg, prior)
    # Condition on every prompt the loop can ask for now: a bad prompt fails before any folder is
    # written, and the loop itself never encodes (nor waits on the device for it).
    for prompt in prompt_variants(cfg.prompt, cfg.guidance.view_prompts, prior.views):
        prior.cond(prompt)
    cam_gen = torch.Generator("cpu").manual_seed(cfg.optim.seed)             # cameras: host side, no syncs
    noise_gen = torch.Generator(device).manual_seed(cfg.optim.seed + 1)      # σ and noise: on the device
    init_gen = torch.Generator("cpu").manual_seed(cfg.optim.seed + 2)
    field = VoxelField(cfg.field.grid_size, prior.channels, prior.pixel_space, cfg.field.density_shift,
                       prior.appearance_init, prior.background_init, init_gen, device)
    guide, polish_guide = build_guides(cfg, prior)
    return Run(cfg, prior, field, build_optimizer(field, cfg), guide, polish_guide,
               {"camera": cam_gen, "noise": noise_gen}, device)


# The fields a run cannot start without: where the config leaves them unset, the prior's defaults must fill them.
NEEDED_FROM_THE_PRIOR = ("field.grid_size", "render.resolution", "camera.fov_min", "camera.fov_max",
                         "guidance.guidance_scale", "reg.emptiness_weight", "optim.steps", "optim.polish_steps")


def resolve_for_prior(cfg: RunConfig, prior: Prior) -> None:
    """Fill in what the config leaves to the prior (its defaults, the view scheme, the σ range drawn) or derives
    (the emptiness schedule), list it in cfg.resolved and validate: config.json alone reruns the run."""
    unset = cfg.unset_fields()
    resolve_defaults(cfg, prior.config_defaults())
    still = cfg.unset_fields()
    missing = [path for path in NEEDED_FROM_THE_PRIOR if path in still]
    if missing:   # a prior whose config_defaults() leaves one out: say so now, not as a TypeError mid-run
        raise SJCError(f"the {prior.name} prior gives no default for {', '.join(flag_name(p.split('.')[-1]) for p in missing)}: "
                       f"give them on the command line, or in the prior's defaults")
    cfg.guidance.polish_follows_sjc()   # a prior without its own polish scale or K: the SJC steps'
    g = cfg.guidance
    if g.view_scheme is not None and g.view_scheme != prior.views.name:
        raise SJCError(f"--view-scheme {g.view_scheme}: this {prior.name} prior understands only "
                       f"'{prior.views.name}' view prompts (the closed-form prior takes any scheme)")
    cfg.prior = cfg.prior or prior.name
    g.view_scheme = prior.views.name   # what the run uses, not "the prior's own"
    drawn = train_sigmas(prior, g.sigma_min, g.sigma_max)
    g.sigma_min = float(drawn[0]) if g.sigma_min is None else g.sigma_min
    g.sigma_max = float(drawn[-1]) if g.sigma_max is None else g.sigma_max
    if cfg.reg.emptiness_mult_step is None:   # fixed at creation: resuming with more --steps keeps the schedule
        cfg.reg.emptiness_mult_step = int(cfg.reg.emptiness_mult_after * cfg.optim.steps)
    cfg.record_resolved(unset)
    cfg.validate()


def build_guides(cfg: RunConfig, prior: Prior) -> tuple[Callable, Callable]:
    """The image-space gradients of the SJC steps and of the polish: the prior's score at each one's σ range, or
    (--method oracle) the pull towards the true views."""
    g = cfg.guidance
    if g.method == "oracle":
        obj = prior.truth(cfg.prompt)
        if obj is None:
            raise SJCError("--method oracle needs a toy-world prompt (it trains on the true views of the object)")
        from .toyworld import render_truth
        guide = OracleGuide(lambda cams: render_truth(obj, cams, cfg.render.resolution, cfg.render.resolution))
        return guide, guide   # no σ to lower: the polish only freezes the geometry
    return (ScoreGuide(prior, g.method, train_sigmas(prior, g.sigma_min, g.sigma_max), g.guidance_scale, g.num_noise),
            ScoreGuide(prior, g.method, train_sigmas(prior, g.polish_sigma_min, g.polish_sigma_max),
                       g.polish_guidance_scale, g.polish_num_noise))


def sjc_step(run: Run, step: int) -> dict[str, torch.Tensor]:
    """One step of Score Jacobian Chaining; returns diagnostics (emptiness, score norm, opacity) as device tensors,
    which the caller may read when it likes (reading one waits for the device).

    Steps past cfg.optim.steps are the appearance polish: the score at small σ, chained into the appearance
    grid alone (the geometry is final), from a fresh Adamax state.
    """
    cfg = run.cfg
    polish = step >= cfg.optim.steps
    if step == cfg.optim.steps:
        run.optimizer.state.pop(run.field.appearance_raw, None)
    cams_host = sample_train_cameras(1, cfg.camera, run.generators["camera"])
    cams = cams_host.to(run.device)
    prompt = view_prompt(cfg.prompt, cams_host, cfg.guidance.view_prompts, run.prior.views)
    # (In the polish the density is frozen: one refresh after its last change, then the grid cannot change.)
    if step % cfg.render.occupancy_every == 0 and step < cfg.optim.steps + cfg.render.occupancy_every \
            and uses_occupancy(cfg.render.renderer, run.device):
        run.field.refresh_occupancy(cfg.render.occupancy_threshold)
    run.optimizer.zero_grad(set_to_none=True)
    # The polish chains the score into the appearance alone (the regularisers shape the geometry only); its
    # geometry is frozen, so no gradient of it is computed only to be dropped.
    with run.field.frozen_geometry() if polish else nullcontext():
        out = run.render(cams)
        guide = run.polish_guide if polish else run.guide
        grad = guide(out.image.detach(), cams, prompt, run.generators["noise"])   # 2D score, no U-Net Jacobian
        empty = out.emptiness / out.n_samples.clamp_min(1)   # regularizers.emptiness_loss, summed by the renderer
        if polish:
            torch.autograd.backward(out.image, -grad)
        else:
            lam = emptiness_weight(cfg.reg.emptiness_weight, step, cfg.reg.emptiness_mult_step, cfg.reg.emptiness_mult)
            reg = lam * empty
            if cfg.reg.center_depth_weight:
                reg = reg + cfg.reg.center_depth_weight * center_depth_loss(out.depth, cfg.render.far_depth)
            # The chain rule as one vector–Jacobian product: ascend the 2D score through ∂x/∂θ, descend the regularisers.
            torch.autograd.backward([out.image, reg], [-grad, torch.ones_like(reg)])
    run.optimizer.step()
    return {"emptiness": empty.detach(), "grad_norm": grad.norm() / grad.numel() ** 0.5,
            "opacity": out.opacity.mean().detach()}


def checkpoint_path(out_dir: Path) -> Path:
    """Where a run folder keeps its checkpoint."""
    return Path(out_dir) / "checkpoint.safetensors"


def save(run: Run, out_dir: Path) -> None:
    """Checkpoint the run (field, optimiser, step, RNG states) into its folder, atomically."""
    save_checkpoint(checkpoint_path(out_dir), run.field, run.optimizer, run.step, run.generators)


def resume_from(run: Run, out_dir: Path, field_only: bool = False) -> None:
    """Restore the run's state from its folder's checkpoint: the next step is the one the checkpoint stopped before
    (field_only: the field alone, enough to render or export it)."""
    run.step = load_checkpoint(checkpoint_path(out_dir), run.field, optimizer=None if field_only else run.optimizer,
                               generators=None if field_only else run.generators)


def train(run: Run, out_dir: Optional[Path] = None, progress: bool = True,
          on_preview: Optional[Callable[[Run], None]] = None) -> Run:
    """Optimise from run.step through cfg.optim.steps and the polish steps, checkpointing every ckpt_every
    steps and at the end."""
    from tqdm import tqdm

    cfg = run.cfg
    total = cfg.optim.steps + cfg.optim.polish_steps
    phase = lambda: "sjc polish" if run.step >= cfg.optim.steps else "sjc"   # noqa: E731
    bar = tqdm(total=total, initial=run.step, disable=not progress, desc=phase(), unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    start = run.step
    while run.step < total:
        terms = sjc_step(run, run.step)
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
    bar.close()
    elapsed = time.perf_counter() - t0
    run.timings.update(train_seconds=elapsed, steps_run=run.step - start,
                       seconds_per_step=elapsed / max(run.step - start, 1))
    return run
