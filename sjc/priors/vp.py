"""The σ conventions in one place: VP/DDPM (ᾱ_t) models seen as Karras/VE denoisers D(x, σ).

A VP model sees x_t = √ᾱ·x₀ + √(1−ᾱ)·ε. Dividing by √ᾱ gives the VE form x = x₀ + σ·ε with
σ = √((1−ᾱ)/ᾱ), so a VE input x is fed to the network as x_t = x/√(1+σ²), and D = x − σ·ε̂.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import Prior


# A zero-terminal-SNR schedule ends at ᾱ = 0, σ = ∞; like diffusers' Euler scheduler, treat it as ᾱ = 2⁻²⁴.
MIN_ALPHA_BAR = 2.0 ** -24
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def finite_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ᾱ_t with a zero-terminal-SNR end raised to MIN_ALPHA_BAR, so that every σ_t is finite."""
    return alphas_cumprod.double().clamp_min(MIN_ALPHA_BAR)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t), indexed by the model's timestep t (increasing in t)."""
    a = finite_alphas_cumprod(alphas_cumprod)
    return ((1 - a) / a).sqrt().float()


def checked_prediction_type(kind: str, model: str) -> str:
    """The scheduler's prediction_type if sjc can turn it into D(x, σ); SJCError otherwise."""
    if kind not in PREDICTION_TYPES:
        from ..errors import SJCError
        raise SJCError(f"{model}: its scheduler's prediction_type {kind!r} is not supported; sjc reads "
                       f"{', '.join(PREDICTION_TYPES)}")
    return kind


def alpha_bar_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """ᾱ = 1 / (1 + σ²)."""
    return 1.0 / (1.0 + sigma ** 2)


def sigma_to_t(sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The timestep whose σ is nearest (in log σ) to each given σ; stays on the device."""
    return (sigma.reshape(-1, 1).log() - sigmas.reshape(1, -1).log()).abs().argmin(-1)


def vp_input(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The VP network input for a VE sample: x_t = x / √(1 + σ²)."""
    return x / (1 + sigma ** 2).sqrt()


def v_to_eps(v: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε from a v-prediction on the scaled input: ε = √ᾱ·v + √(1−ᾱ)·x_t."""
    return alpha_bar.sqrt() * v + (1 - alpha_bar).sqrt() * x_t


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̂ = ε_uncond + s·(ε_cond − ε_uncond)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def eps_to_denoised(x: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """D(x, σ) = x − σ·ε̂ (VE units)."""
    return x - sigma * eps


def _bcast(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return s.reshape(-1, *([1] * (x.dim() - 1)))


class VPDenoiserPrior(Prior):
    """Any ε/v/x₀-prediction VP model as D(x, σ): snap σ to the table, scale the input, convert, guide."""

    prediction_type: str = "epsilon"   # or "v_prediction" or "sample" (x₀)
    trim_small: int = 10               # smallest σ-table entries left out of SJC's σ draw
    trim_large: int = 30               # largest ones left out

    def __init__(self, scheduler, device, model: str = "the model"):
        """σ table and prediction type from a diffusers DDPM-style scheduler (`model` names it in errors)."""
        super().__init__()
        self.sigmas = sigmas_from_alphas_cumprod(scheduler.alphas_cumprod).to(device)   # index = timestep t
        self.alphas_cumprod = finite_alphas_cumprod(scheduler.alphas_cumprod).float().to(device)
        self.prediction_type = checked_prediction_type(scheduler.config.get("prediction_type", "epsilon"), model)

    def default_train_sigmas(self) -> torch.Tensor:
        """The prior's sigma_range where it sets one, else the reference's draw: the whole table without its
        smallest and largest entries."""
        if self.sigma_range is not None:
            return super().default_train_sigmas()
        return self.sigmas[self.trim_small:self.sigmas.numel() - self.trim_large]

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor, cond, guidance: float) -> torch.Tensor:
        """The raw network output (ε or v) for VP inputs x_t at timesteps t, guidance applied."""
        raise NotImplementedError

    def D(self, x: torch.Tensor, sigma, cond=None, guidance: Optional[float] = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(x.shape[0])
        t = sigma_to_t(sigma, self.sigmas)
        s = _bcast(self.sigmas[t], x)          # the table's σ that the network was trained for
        x_t = vp_input(x, s)
        out = self.model_output(x_t, t, cond, self.sampling_guidance_scale if guidance is None else guidance).to(x.dtype)
        if self.prediction_type == "sample":   # x̂₀ is D itself: x − σ·ε̂ with ε̂ = (x − x̂₀)/σ
            return out
        if self.prediction_type == "v_prediction":
            out = v_to_eps(out, x_t, _bcast(self.alphas_cumprod[t], x))
        return eps_to_denoised(x, s, out)
