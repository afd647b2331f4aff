"""The prior interface: every 2D model is exposed as a Karras/VE denoiser D(x, σ, cond), and owns its settings.

A prior class is registered once (`@register_prior`) under its `name`, and carries everything the rest of sjc
needs to know about it: the config defaults it sets, the model flags it reads, the pipeline classes its weights
come as, and how it is built from a run config (`from_config`). The registry, the refusal of flags a prior
would ignore and `sjc generate --help` all derive from that.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import torch

from ..cameras import REFERENCE_VIEWS, ViewScheme
from ..errors import SJCError

# The reference SJC settings (the official code's) that a prior's own `defaults` override: a 100³ grid and 10,000 steps
# (long on a CPU: set smaller ones there), the reference field of view, and neutral guidance and emptiness weights
# (each family sets its own; Stable Diffusion the reference 100 and 1e4).
REFERENCE_DEFAULTS = {"grid_size": 100, "steps": 10000, "guidance_scale": 1.0, "emptiness_weight": 1.0,
                      "fov_min": 40.0, "fov_max": 70.0}

PRIORS: dict[str, type["Prior"]] = {}   # --prior NAME → its class, in registration order


def register_prior(cls: type["Prior"]) -> type["Prior"]:
    """Class decorator: make `cls` the prior `--prior cls.name` builds (with cls.from_config)."""
    PRIORS[cls.name] = cls
    return cls


class Prior(ABC):
    """A 2D diffusion prior in the VE convention: x in data units, σ the noise std, D returns x̂₀."""

    name: str = "prior"
    # Run settings this prior fills where the user left them unset, over REFERENCE_DEFAULTS (by field name).
    defaults: dict = {}
    model_flags: tuple[str, ...] = ()   # the ModelConfig settings it reads (others given on the command line: refused)
    pipelines: tuple[str, ...] = ()     # diffusers pipeline classes (model_index.json) that --model detection maps here
    model_classes: tuple[str, ...] = ()  # bare model folders (config.json's class) detection maps here
    single_file: bool = False           # whether a single checkpoint file (.safetensors, .ckpt) is this prior's
    builtin_model = None                # the weights it loads when --model is not given (a folder), if any
    channels: int = 3
    height: int = 32
    width: int = 32
    pixel_space: bool = True          # appearance through sigmoid·2−1 (else raw latent features)
    background_init: float = 0.0      # initial background value in data units
    appearance_init: str = "zeros"    # "zeros" or "randn"
    sigmas: torch.Tensor              # ascending σ table the model knows
    sigma_range: Optional[tuple[float, float]] = None   # SJC's default σ draw (data units); None: the whole table
    views: ViewScheme = REFERENCE_VIEWS   # the view prompts it understands ("front view of ...")
    sampling_guidance_scale: float = 1.0  # D's guidance when none is given: 2D sampling, the 2D checks (not SJC's)

    def __init__(self):
        self._cond_cache: dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg, device) -> "Prior":
        """Build the prior a run config asks for (`sjc generate --prior NAME`); by default the class itself,
        called without arguments."""
        return cls()

    @classmethod
    def merged_defaults(cls) -> dict:
        """This prior's defaults over the reference ones."""
        return {**REFERENCE_DEFAULTS, **cls.defaults}

    def config_defaults(self) -> dict:
        """merged_defaults() plus its native resolution (and no appearance polish unless it sets one)."""
        return {"resolution": self.height, "polish_steps": 0, **self.merged_defaults()}

    @property
    def shape(self) -> tuple[int, int, int]:
        """Data shape (channels, height, width)."""
        return (self.channels, self.height, self.width)

    def sigmas_between(self, lo: float, hi: float) -> torch.Tensor:
        """The table's entries in [lo, hi]; one line where there are none."""
        s = self.sigmas
        sel = s[(s >= lo) & (s <= hi)]
        if sel.numel() == 0:
            raise SJCError(f"no σ of prior {self.name!r} lies in [{lo:g}, {hi:g}]; its table spans "
                           f"[{float(s[0]):.3g}, {float(s[-1]):.3g}]")
        return sel

    def default_train_sigmas(self) -> torch.Tensor:
        """The σ values SJC draws by default: those in `sigma_range`, else the whole table."""
        return self.sigmas if self.sigma_range is None else self.sigmas_between(*self.sigma_range)

    def train_sigmas(self, sigma_min: Optional[float] = None, sigma_max: Optional[float] = None) -> torch.Tensor:
        """The table entries SJC draws σ from: the default draw, or the table within [min, max] (an end not given
        is the table's own)."""
        if sigma_min is None and sigma_max is None:
            return self.default_train_sigmas()
        return self.sigmas_between(float(self.sigmas[0]) if sigma_min is None else sigma_min,
                                   float(self.sigmas[-1]) if sigma_max is None else sigma_max)

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
        """Denoise x (B, C, H, W) at noise level σ (scalar or (B,)) → estimate of the clean x₀; guidance None:
        the prior's sampling_guidance_scale."""

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Data → RGB in [-1, 1] for previews (identity for pixel-space priors)."""
        return x

    def feature_to_rgb(self, features: torch.Tensor) -> torch.Tensor:
        """Per-point appearance features (P, C) → RGB in [-1, 1], for mesh vertex colours."""
        return features

    def truth(self, prompt: str):
        """The known 3D object behind a prompt, if any (toy world), for ground-truth evaluation."""
        return None
