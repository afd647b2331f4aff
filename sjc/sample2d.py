"""2D sampling from any prior with the Karras/EDM Heun sampler (deterministic, second order)."""
from __future__ import annotations

from typing import Optional

import torch
from tqdm import tqdm

from .priors.base import Prior


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device="cpu") -> torch.Tensor:
    """EDM's noise levels: σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, then a final 0."""
    ramp = torch.linspace(0, 1, n, device=device)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


@torch.no_grad()
def heun_sample(prior: Prior, n: int, steps: int = 30, sigma_min: Optional[float] = None,
                sigma_max: Optional[float] = None, prompt: str = "", guidance: Optional[float] = None,
                generator: Optional[torch.Generator] = None, device="cpu", progress: bool = False) -> torch.Tensor:
    """Draw n samples (n, C, H, W): integrate dx/dσ = (x − D(x, σ))/σ from σ_max to 0 with Heun steps."""
    lo = float(prior.sigmas[0]) if sigma_min is None else sigma_min
    hi = float(prior.sigmas[-1]) if sigma_max is None else sigma_max
    if not 0 < lo < hi:   # one end given beyond the other end of the prior's table
        from .errors import SJCError
        raise SJCError(f"need 0 < σ_min < σ_max, got [{lo:g}, {hi:g}] (the prior's table spans "
                       f"[{float(prior.sigmas[0]):.3g}, {float(prior.sigmas[-1]):.3g}]); set --sigma-min / --sigma-max")
    sig = karras_sigmas(steps, lo, hi, device=device)
    cond = prior.cond(prompt)
    x = torch.randn((n, *prior.shape), generator=generator, device=device) * sig[0]
    for i in tqdm(range(steps), desc="heun", unit="step", disable=not progress, leave=False):
        s, s_next = sig[i], sig[i + 1]
        d = (x - prior.D(x, s, cond, guidance)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:   # Heun's correction, except on the last step to σ = 0
            d_next = (x_next - prior.D(x_next, s_next, cond, guidance)) / s_next
            x_next = x + (s_next - s) * (d + d_next) / 2
        x = x_next
    return x
