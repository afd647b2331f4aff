"""Building a run from its config: the device, the prior and what the config leaves to it, the field, the
optimiser, the guides of the SJC steps and of the polish, the renderer, and the random streams."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .allocator import keep_freed_memory
from .config import RunConfig, fill_from
from .errors import SJCError
from .field import VoxelField
from .guidance import OracleGuide, ScoreGuide, prompt_variants
from .optim import FusedAdamax
from .priors import Prior, load_prior
from .render import resolve_renderer
from .settings import flag_name, leaves
from .train import Run


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


def build_run(cfg: RunConfig, prior: Optional[Prior] = None, bounds: bool = True) -> Run:
    """Instantiate a fresh run (step 0) from a config; fills in what it leaves to the prior (resolved in place).

    prior: an instance to use instead of the one cfg names (a prior of your own, from Python); bounds=False holds
    the config to its types alone (a finished run's field, loaded to render or export).
    """
    device = resolve_device(cfg.output.device)
    if device.type == "cpu":
        keep_freed_memory()
    if prior is not None and cfg.prior and cfg.prior != prior.name:   # config.json must name the prior that ran
        raise SJCError(f"the config names prior {cfg.prior!r} but the prior given is {prior.name!r}: leave the "
                       f"config's prior unset, or give the prior it names")
    prior = prior or load_prior(cfg, device)
    resolve_for_prior(cfg, prior, bounds)
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
    renderer = resolve_renderer(cfg.render.renderer, device, cfg.reg.emptiness_scale)
    return Run(cfg, prior, field, build_optimizer(field, cfg), guide, polish_guide, renderer,
               {"camera": cam_gen, "noise": noise_gen}, device)


def resolve_for_prior(cfg: RunConfig, prior: Prior, bounds: bool = True) -> None:
    """Fill in what the config leaves to the prior (its defaults, its view scheme, its σ range) or derives (the
    polish's scale and K, the emptiness schedule), list it in cfg.resolved and validate: config.json alone reruns
    the run."""
    unset = cfg.unset_fields()
    fill_from(cfg, prior.config_defaults())
    missing = [f for _, owner, f in leaves(cfg) if f.metadata.get("prior") and not f.metadata.get("derived")
               and getattr(owner, f.name) is None]
    if missing:   # a prior whose config_defaults() leaves one out: say so now, not as a TypeError mid-run
        raise SJCError(f"the {prior.name} prior gives no default for {', '.join(flag_name(f) for f in missing)}: "
                       f"give them on the command line, or in the prior's defaults")
    g = cfg.guidance
    g.polish_follows_sjc()   # a prior without its own polish scale or K: the SJC steps'
    if g.view_scheme is not None and g.view_scheme != prior.views.name:
        raise SJCError(f"--view-scheme {g.view_scheme}: this {prior.name} prior understands only "
                       f"'{prior.views.name}' view prompts (the closed-form prior takes any scheme)")
    cfg.prior = cfg.prior or prior.name
    g.view_scheme = prior.views.name   # what the run uses, not "the prior's own"
    drawn = prior.train_sigmas(g.sigma_min, g.sigma_max)
    g.sigma_min = float(drawn[0]) if g.sigma_min is None else g.sigma_min
    g.sigma_max = float(drawn[-1]) if g.sigma_max is None else g.sigma_max
    if cfg.reg.emptiness_mult_step is None:   # fixed at creation: resuming with more --steps keeps the schedule
        cfg.reg.emptiness_mult_step = int(cfg.reg.emptiness_mult_after * cfg.optim.steps)
    cfg.record_resolved(unset)
    if bounds:
        cfg.validate()
    else:
        cfg.check_types()


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
    return (ScoreGuide(prior, g.method, prior.train_sigmas(g.sigma_min, g.sigma_max), g.guidance_scale, g.num_noise),
            ScoreGuide(prior, g.method, prior.train_sigmas(g.polish_sigma_min, g.polish_sigma_max),
                       g.polish_guidance_scale, g.polish_num_noise))
