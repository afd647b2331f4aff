"""Priors: one adapter per model family, each exposing D(x, σ, cond) in the VE convention."""
from __future__ import annotations

from ..errors import SJCError
from .base import Prior, train_sigmas
from .closed_form import ClosedFormPrior

PRIORS = {"closed-form": ClosedFormPrior}
DEFAULT_PRIOR = "closed-form"


def load_prior(name: str, resolution: int | None = None, device="cpu") -> Prior:
    """Build a prior by name: one of PRIORS."""
    if name not in PRIORS:
        raise SJCError(f"unknown prior {name!r}; available: {', '.join(PRIORS)}")
    kwargs = {"device": device}
    if resolution is not None:
        kwargs["resolution"] = resolution
    return PRIORS[name](**kwargs)


__all__ = ["Prior", "PRIORS", "DEFAULT_PRIOR", "load_prior", "train_sigmas", "ClosedFormPrior"]
