"""Guidance: how the 2D denoiser becomes an image-space ascent direction (PAAS, naive, SDS) and the σ draw."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .cameras import REFERENCE_VIEWS, Cameras, ViewScheme
from .priors.base import Prior


def sample_sigma(sigmas: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One σ drawn uniformly from the (trimmed) σ table, as a 0-dim tensor on the table's device."""
    i = torch.randint(sigmas.numel(), (1,), generator=generator, device=sigmas.device)
    return sigmas.index_select(0, i).squeeze(0)   # indexing by a 0-dim tensor would sync with the host


def paas(prior: Prior, x: torch.Tensor, sigma: torch.Tensor, cond, guidance: Optional[float],
         generator: torch.Generator, num_noise: int = 1, plain: bool = False) -> torch.Tensor:
    """Perturb-and-average scoring, scaled by 1/σ: mean_n (D(x + σn, σ) − x) / σ, or − z instead of − x if plain."""
    b = x.shape[0]
    n = torch.randn((num_noise * b, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    xk = x.repeat(num_noise, 1, 1, 1)
    z = xk + sigma * n
    d = prior.D(z, sigma, cond, guidance)
    ref = z if plain else xk
    return ((d - ref) / sigma).view(num_noise, *x.shape).mean(0)


def naive(prior: Prior, x: torch.Tensor, sigma: torch.Tensor, cond, guidance: Optional[float],
          generator: torch.Generator, num_noise: int = 1) -> torch.Tensor:
    """The score on the clean render (out of distribution for σ > 0): (D(x, σ) − x) / σ."""
    return (prior.D(x, sigma, cond, guidance) - x) / sigma


def sds(prior: Prior, x: torch.Tensor, sigma: torch.Tensor, cond, guidance: Optional[float],
        generator: torch.Generator, num_noise: int = 1) -> torch.Tensor:
    """DreamFusion's SDS in VE form: w(σ)·(ε − ε̂) = (1 − ᾱ)(D(z, σ) − x)/σ with 1 − ᾱ = σ²/(1 + σ²)."""
    w = sigma ** 2 / (1 + sigma ** 2)
    return w * paas(prior, x, sigma, cond, guidance, generator, num_noise)


GRADIENTS: dict[str, Callable] = {
    "paas": paas,
    "paas-plain": lambda *a, **k: paas(*a, **k, plain=True),
    "naive": naive,
    "sds": sds,
}


def view_prompt(prompt: str, cams: Cameras, enabled: bool = True, views: ViewScheme = REFERENCE_VIEWS) -> str:
    """The prompt prefixed by the view label of the (first) camera, e.g. 'front view of a red cube'."""
    if not enabled:
        return prompt
    return views.prefix(views.label(float(cams.azimuth[0]), float(cams.elevation[0]))) + prompt


def prompt_variants(prompt: str, view_prompts: bool = True, views: ViewScheme = REFERENCE_VIEWS) -> list[str]:
    """Every prompt a run conditions on: the plain one first, then each view-prefixed one."""
    return [prompt] + ([views.prefix(v) + prompt for v in views.labels] if view_prompts else [])


class ScoreGuide:
    """Per step: pick σ, condition on the (view-prefixed) prompt, return the image-space ascent direction."""

    def __init__(self, prior: Prior, method: str, sigmas: torch.Tensor, guidance: float, num_noise: int):
        self.prior, self.method, self.sigmas = prior, method, sigmas
        self.fn = GRADIENTS[method]
        self.guidance, self.num_noise = guidance, num_noise

    def __call__(self, x: torch.Tensor, cams: Cameras, prompt: str, generator: torch.Generator) -> torch.Tensor:
        """x: the detached render; prompt: already view-prefixed by the loop (from host-side camera angles)."""
        sigma = sample_sigma(self.sigmas, generator)
        cond = self.prior.cond(prompt)
        with torch.no_grad():
            return self.fn(self.prior, x, sigma, cond, self.guidance, generator, num_noise=self.num_noise)


class OracleGuide:
    """The supervised ceiling: pull each render towards the true analytic render of the same camera."""

    def __init__(self, truth_fn: Callable[[Cameras], torch.Tensor]):
        self.truth_fn = truth_fn

    def __call__(self, x: torch.Tensor, cams: Cameras, prompt: str, generator: torch.Generator) -> torch.Tensor:
        return self.truth_fn(cams).to(x) - x
