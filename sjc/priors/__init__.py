"""Priors: one adapter per model family, each exposing D(x, σ, cond) in the VE convention."""
from __future__ import annotations

from typing import Callable

from ..errors import SJCError
from .base import Prior, train_sigmas
from .closed_form import ClosedFormPrior

DEFAULT_PRIOR = "toy"
PIPELINE_PRIORS = {"ToyWorldPipeline": "toy", "StableDiffusionPipeline": "sd", "DDPMPipeline": "unet2d", "DDIMPipeline": "unet2d",
                   "ScoreSdeVePipeline": "unet2d"}


def prior_name(cfg) -> str:
    """The prior to use: --prior (checked against --model's files), else detected from --model, else the built-in."""
    if cfg.prior:
        if cfg.prior not in PRIORS:
            raise SJCError(f"unknown prior {cfg.prior!r}; available: {', '.join(PRIORS)} (a prior of your own is "
                           f"passed from Python: sjc.pipeline.generate, resume or load_run(..., prior=it))")
        if cfg.model.model:
            if cfg.prior == "closed-form":
                raise SJCError("--prior closed-form is built from the toy world's true views and takes no --model; "
                               "leave --model out")
            found = detected_prior(cfg.model.model) if cfg.prior in PIPELINE_PRIORS.values() else cfg.prior
            if found != cfg.prior:
                raise SJCError(f"--prior {cfg.prior} does not fit {cfg.model.model}, which holds a {found} model; "
                               f"pass --prior {found}, or leave --prior out")
        return cfg.prior
    if not cfg.model.model:
        return DEFAULT_PRIOR
    return detected_prior(cfg.model.model)


def detected_prior(model: str) -> str:
    """The prior that --model's files call for: from its pipeline class; 'sd' for a single checkpoint file."""
    from .loading import model_class, pipeline_class, resolve_model

    kind, path = resolve_model(model)
    if kind == "file":
        return "sd"
    cls = pipeline_class(path)
    if cls is None:   # a bare model folder (config.json + weights)
        if model_class(path) == "UNet2DConditionModel":
            raise SJCError(f"{model} holds a text-conditioned U-Net alone: pass the pipeline folder above it (the one "
                           "with unet/, text_encoder/, tokenizer/ and scheduler/)")
        return "unet2d"
    if cls not in PIPELINE_PRIORS:
        raise SJCError(f"{model} holds a {cls}, which sjc cannot use as a prior; "
                       f"supported: {', '.join(PIPELINE_PRIORS)}")
    return PIPELINE_PRIORS[cls]


MODEL_FLAGS = ("model_config", "half", "attention_slicing", "offload", "compile", "channels_last")
# The model flags each built-in prior reads (a prior not listed here is assumed to read them all).
MODEL_FLAGS_READ = {"toy": ("half", "channels_last"), "closed-form": (), "unet2d": ("half",), "sd": MODEL_FLAGS}


def refuse_unread_flags(cfg, given) -> None:
    """One line for a model flag given on the command line (a field path in `given`) that the run's prior would
    silently ignore; values that come from a config.json are left alone."""
    name = prior_name(cfg)
    readers = [p for p in MODEL_FLAGS_READ if p != name]
    for flag in MODEL_FLAGS:
        if f"model.{flag}" in given and getattr(cfg.model, flag) and flag not in MODEL_FLAGS_READ.get(name, MODEL_FLAGS):
            who = ", ".join(p for p in readers if flag in MODEL_FLAGS_READ[p])
            raise SJCError(f"--{flag.replace('_', '-')}: the {name} prior does not read it (the {who} prior does): "
                           f"leave it out")


def _no_model_config(cfg, name: str) -> None:
    """One line for --model-config (from the command line or a config.json) where the prior has no use for it."""
    if cfg.model.model_config and "model_config" not in MODEL_FLAGS_READ.get(name, MODEL_FLAGS):   # a config.json's too
        raise SJCError(f"--model-config is for a single Stable Diffusion checkpoint file; the {name} prior does not "
                       f"read it: leave it out")


def _closed_form(cfg, device) -> Prior:
    from ..cameras import REFERENCE_VIEWS, VIEW_SCHEMES
    views = VIEW_SCHEMES[cfg.guidance.view_scheme] if cfg.guidance.view_scheme else REFERENCE_VIEWS
    return ClosedFormPrior(resolution=cfg.render.resolution or 32, device=device, views=views)


def _toy(cfg, device) -> Prior:   # the shipped learned prior unless --model names another pixel-space text U-Net
    from .text_unet import PixelTextPrior
    return PixelTextPrior(cfg.model.model, device, half=cfg.model.half, channels_last=cfg.model.channels_last)


def _needs_weights(cfg, name: str) -> None:
    if not cfg.model.model:
        raise SJCError(f"prior {name!r} needs weights: pass --model <diffusers folder, cached Hub id or .safetensors>")


def _sd(cfg, device) -> Prior:
    from .stable_diffusion import StableDiffusionPrior
    _needs_weights(cfg, "sd")
    m = cfg.model
    return StableDiffusionPrior(m.model, device, m.model_config, m.half, m.attention_slicing, m.offload,
                                compile=m.compile, channels_last=m.channels_last)


def _unet2d(cfg, device) -> Prior:
    from .unet2d import UNet2DPrior
    _needs_weights(cfg, "unet2d")
    return UNet2DPrior(cfg.model.model, device, cfg.model.half)


# Every prior by name (--prior): a function (run config, device) → Prior. A new prior is one file and one entry here.
PRIORS: dict[str, Callable] = {"toy": _toy, "closed-form": _closed_form, "sd": _sd, "unet2d": _unet2d}


def load_prior(cfg, device="cpu") -> Prior:
    """Build the run's prior from its config."""
    name = prior_name(cfg)
    _no_model_config(cfg, name)
    return PRIORS[name](cfg, device)


__all__ = ["Prior", "PRIORS", "DEFAULT_PRIOR", "MODEL_FLAGS", "load_prior", "prior_name", "refuse_unread_flags",
           "train_sigmas", "ClosedFormPrior"]
