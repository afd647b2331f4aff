"""The prior interface: every 2D model is exposed as a Karras/VE denoiser D(x, σ, cond)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import torch

from ..cameras import REFERENCE_VIEWS, ViewScheme


class Prior(ABC):
    """A 2D diffusion prior in the VE convention: x in data units, σ the noise std, D returns x̂₀."""

    name: str = "prior"
    channels: int = 3
    height: int = 32
    width: int = 32
    pixel_space: bool = True          # appearance through sigmoid·2−1 (else raw latent features)
    text_conditioned: bool = True
    # Config fields this prior sets where the user left them unset: the reference grid, steps and field of view, and
    # neutral guidance and emptiness weights (each family sets its own; Stable Diffusion the reference 100 and 1e4).
    defaults: dict = {"grid_size": 100, "steps": 10000, "guidance_scale": 1.0, "emptiness_weight": 1.0,
                      "fov_min": 40.0, "fov_max": 70.0}
    background_init: float = 0.0      # initial background value in data units
    appearance_init: str = "zeros"    # "zeros" or "randn"
    sigmas: torch.Tensor              # ascending σ table the model knows
    views: ViewScheme = REFERENCE_VIEWS   # the view prompts it understands ("front view of ...")
    sampling_guidance: Optional[float] = None   # guidance for direct 2D sampling (None: the SJC default)

    def __init__(self):
        self._cond_cache: dict[str, Any] = {}

    @property
    def sjc_guidance(self) -> float:
        """The guidance scale SJC uses unless told otherwise (the config's guidance_scale default)."""
        return self.defaults.get("guidance_scale", 1.0)

    @property
    def default_guidance(self) -> float:
        """The guidance scale of D when none is given: 2D sampling, the 2D check and the 2D PAAS experiment."""
        return self.sjc_guidance if self.sampling_guidance is None else self.sampling_guidance

    @classmethod
    def merged_defaults(cls) -> dict:
        """This prior's defaults over the reference ones (Prior.defaults)."""
        return {**Prior.defaults, **cls.defaults}

    def config_defaults(self) -> dict:
        """merged_defaults() plus its native resolution (and no appearance polish unless it sets one)."""
        return {"resolution": self.height, "polish_steps": 0, **self.merged_defaults()}

    @property
    def shape(self) -> tuple[int, int, int]:
        """Data shape (channels, height, width)."""
        return (self.channels, self.height, self.width)

    def default_train_sigmas(self) -> torch.Tensor:
        """The σ values drawn during SJC (default: the whole table)."""
        return self.sigmas

    def cond(self, prompt: str) -> Any:
        """Conditioning for a prompt, computed once per distinct prompt."""
        if prompt not in self._cond_cache:
            self._cond_cache[prompt] = self.encode(prompt)
        return self._cond_cache[prompt]

    @abstractmethod
    def encode(self, prompt: str) -> Any:
        """Turn a (possibly view-prefixed) prompt into the model's conditioning."""

    @abstractmethod
    def D(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None, guidance: Optional[float] = None) -> torch.Tensor:
        """Denoise x (B, C, H, W) at noise level σ (scalar or (B,)) → estimate of the clean x₀."""

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Data → RGB in [-1, 1] for previews (identity for pixel-space priors)."""
        return x

    def feature_to_rgb(self, features: torch.Tensor) -> torch.Tensor:
        """Per-point appearance features (P, C) → RGB in [-1, 1], for mesh vertex colours."""
        return features

    def truth(self, prompt: str):
        """The known 3D object behind a prompt, if any (toy world), for ground-truth evaluation."""
        return None


def train_sigmas(prior: Prior, sigma_min: Optional[float] = None, sigma_max: Optional[float] = None) -> torch.Tensor:
    """The table entries SJC draws σ from: the prior's default, or its table restricted to [min, max]."""
    if sigma_min is None and sigma_max is None:
        return prior.default_train_sigmas()
    s = prior.sigmas
    lo = sigma_min if sigma_min is not None else float(s[0])
    hi = sigma_max if sigma_max is not None else float(s[-1])
    sel = s[(s >= lo) & (s <= hi)]
    if sel.numel() == 0:
        from ..errors import SJCError
        raise SJCError(f"no σ of prior {prior.name!r} lies in [{lo:g}, {hi:g}]; its table spans "
                       f"[{float(s[0]):.3g}, {float(s[-1]):.3g}]")
    return sel
