"""Priors: one adapter per model family, each exposing D(x, σ, cond) in the VE convention.

Every prior registers itself (`@register_prior` in its own module); this package imports the built-in ones, any
other module placed in this folder, and the modules named by installed packages under the `sjc.priors` entry
point group, so a new prior is one file.
"""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib.metadata import entry_points

from ..errors import SJCError
from .base import PRIORS, REFERENCE_DEFAULTS, Prior, register_prior
from . import text_unet, closed_form, stable_diffusion, unet2d   # noqa: E402,F401  (the built-in order: toy first)
from .closed_form import ClosedFormPrior

DEFAULT_PRIOR = "toy"
MODEL_FLAGS = ("model", "model_config", "half", "attention_slicing", "offload", "compile", "channels_last")

for _m in pkgutil.iter_modules(__path__):   # a prior of one's own, dropped into this folder
    importlib.import_module(f"{__name__}.{_m.name}")
for _ep in entry_points(group="sjc.priors"):   # or shipped by another package, whose failure stops no command
    try:
        _ep.load()
    except Exception as _e:
        warnings.warn(f"sjc: the prior plugin {_ep.name!r} ({_ep.value}) did not load and is left out: "
                      f"{type(_e).__name__}: {_e}", stacklevel=1)


def prior_class(cfg) -> type[Prior]:
    """The class of the prior a run config asks for (see prior_name)."""
    return PRIORS[prior_name(cfg)]


def prior_name(cfg) -> str:
    """The prior to use: --prior (checked against --model's files), else detected from --model, else the built-in."""
    if cfg.prior:
        if cfg.prior not in PRIORS:
            raise SJCError(f"unknown prior {cfg.prior!r}; available: {', '.join(PRIORS)} (a prior of your own is "
                           f"passed from Python: sjc.pipeline.generate, resume or load_run(..., prior=it))")
        cls = PRIORS[cfg.prior]
        if cfg.model.model:
            if "model" not in cls.model_flags:
                what = (cls.__doc__ or "").strip().split("\n")[0].split(";")[0].rstrip(".")
                raise SJCError(f"--prior {cfg.prior}: the {cfg.prior} prior takes no --model"
                               + (f" (it is the {what[:1].lower()}{what[1:]})" if what else "") + "; leave --model out")
            if cls.pipelines or cls.single_file or cls.model_classes:
                found = detected_prior(cfg.model.model)
                if not issubclass(cls, PRIORS[found]):   # a prior of one's own built on a built-in one fits its files
                    raise SJCError(f"--prior {cfg.prior} does not fit {cfg.model.model}, which holds a {found} model; "
                                   f"pass --prior {found}, or leave --prior out")
        return cfg.prior
    if not cfg.model.model:
        return DEFAULT_PRIOR
    return detected_prior(cfg.model.model)


def detected_prior(model: str) -> str:
    """The prior that --model's files call for: by its pipeline class, its bare model class, or a single file."""
    from .loading import model_class, pipeline_class, resolve_model

    kind, path = resolve_model(model)
    if kind == "file":
        return next(name for name, cls in PRIORS.items() if cls.single_file)
    cls_name = pipeline_class(path)
    if cls_name is None:   # a bare model folder (config.json + weights)
        bare = model_class(path)
        if bare == "UNet2DConditionModel":
            raise SJCError(f"{model} holds a text-conditioned U-Net alone: pass the pipeline folder above it (the one "
                           "with unet/, text_encoder/, tokenizer/ and scheduler/)")
        # (any other bare folder goes to the first prior that takes bare folders, whose loader then says what is wrong)
        found = [name for name, cls in PRIORS.items() if bare in cls.model_classes]
        return (found or [name for name, cls in PRIORS.items() if cls.model_classes])[0]
    found = [name for name, cls in PRIORS.items() if cls_name in cls.pipelines]
    if not found:
        raise SJCError(f"{model} holds a {cls_name}, which sjc cannot use as a prior; supported: "
                       f"{', '.join(p for cls in PRIORS.values() for p in cls.pipelines)}")
    return found[0]


def refuse_unread_flags(cfg, given) -> None:
    """One line for a model flag given on the command line (a field path in `given`) that the run's prior would
    silently ignore; values that come from a config.json are left alone."""
    name = prior_name(cfg)
    for flag in MODEL_FLAGS:
        if f"model.{flag}" in given and getattr(cfg.model, flag) and flag not in PRIORS[name].model_flags:
            who = ", ".join(p for p, cls in PRIORS.items() if p != name and flag in cls.model_flags)
            raise SJCError(f"--{flag.replace('_', '-')}: the {name} prior does not read it (the {who} prior does): "
                           f"leave it out")


def load_prior(cfg, device="cpu") -> Prior:
    """Build the run's prior from its config."""
    cls = prior_class(cfg)
    if cfg.model.model_config and "model_config" not in cls.model_flags:   # a config.json's too
        raise SJCError(f"--model-config is for a single Stable Diffusion checkpoint file; the {cls.name} prior does "
                       f"not read it: leave it out")
    if "model" in cls.model_flags and not cfg.model.model and cls.builtin_model is None:
        raise SJCError(f"prior {cls.name!r} needs weights: pass --model <diffusers folder, cached Hub id or "
                       f".safetensors>")
    return cls.from_config(cfg, device)


def defaults_text() -> str:
    """What each registered prior fills in where a flag is left unset, for generate --help."""
    rows = [f"{name}: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in cls.merged_defaults().items())
            for name, cls in PRIORS.items()]
    return ("Each prior's defaults for the flags left unset -- " + "; ".join(rows) + ". Where a prior lists none: "
            "--resolution is its image size, --sigma-min/--sigma-max its σ range (its whole table unless it names "
            "one), --polish-steps 0, and the view scheme its own.")


__all__ = ["Prior", "PRIORS", "REFERENCE_DEFAULTS", "DEFAULT_PRIOR", "MODEL_FLAGS", "register_prior", "load_prior",
           "prior_name", "prior_class", "refuse_unread_flags", "defaults_text", "ClosedFormPrior"]
