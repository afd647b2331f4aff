"""The closed-form prior: the exact MMSE denoiser of a finite toy-world image set (docs/toyworld.md)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from .. import toyworld
from ..atomic import atomic_path
from ..cameras import REFERENCE_VIEWS, VIEW_SCHEMES, ViewScheme
from ..errors import SJCError
from .base import Prior, register_prior


def cache_dir() -> Path:
    """Where rendered toy-world image sets are cached ($SJC_CACHE or ~/.cache/sjc)."""
    return Path(os.environ.get("SJC_CACHE", Path.home() / ".cache" / "sjc"))


def mmse_denoise(z: torch.Tensor, sigma: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """D(z, σ) = Σᵢ softmaxᵢ(−‖z − yᵢ‖² / 2σ²) yᵢ for z (B, D), σ (B,) and images (M, D); stable via log-sum-exp."""
    d2 = (z * z).sum(1, keepdim=True) - 2 * z @ images.t() + (images * images).sum(1)[None]
    logits = -d2.clamp_min(0) / (2 * sigma.view(-1, 1) ** 2)
    return torch.softmax(logits, dim=1) @ images


@register_prior
class ClosedFormPrior(Prior):
    """Exact denoiser of the rendered views of the prompt's toy object; view-prefixed prompts select that view's images."""

    name = "closed-form"
    pixel_space = True
    background_init = 1.0
    # A finite set has no images between its FoVs: training cameras use the set's FoV.
    defaults = {"grid_size": 48, "steps": 1000, "guidance_scale": 1.0, "emptiness_weight": 1.0,
                "fov_min": toyworld.SET_FOV, "fov_max": toyworld.SET_FOV}

    def __init__(self, resolution: int = 32, device="cpu", sigma_range=(0.5, 6.0), images=None,
                 views: ViewScheme = REFERENCE_VIEWS):
        super().__init__()
        self.views = views   # exact for any scheme: each image's label comes from its camera
        self.height = self.width = resolution
        self.device = torch.device(device)
        self.sigmas = torch.logspace(-2, 1.5, 1000, device=self.device)   # 0.01 … 31.6
        # SJC draws σ from [0.5, 6] by default: below ~0.5 this denoiser is a nearest-neighbour lookup of single
        # training views, which lowers PSNR (docs/eval-closed-form-methods.md).
        self.sigma_range = sigma_range
        self._fixed_images = images   # a given image set (M, C, H, W) instead of toy-world renders

    @classmethod
    def from_config(cls, cfg, device) -> "ClosedFormPrior":
        """At the config's resolution (default 32) and in its view scheme (default the reference's)."""
        views = VIEW_SCHEMES[cfg.guidance.view_scheme] if cfg.guidance.view_scheme else REFERENCE_VIEWS
        return cls(resolution=cfg.render.resolution or 32, device=device, views=views)

    def _object_images(self, obj: toyworld.ToyObject, views: Optional[ViewScheme] = None) -> tuple[torch.Tensor, list[str]]:
        """The object's image set (cached on disk) and each image's view label in `views` (default: this prior's)."""
        cams = toyworld.image_set_cameras()
        labels = [(views or self.views).label(float(a), float(e)) for a, e in zip(cams.azimuth, cams.elevation)]
        path = cache_dir() / "toyworld" / f"{obj.shape}-{obj.colour}-{self.height}-v2.pt"
        if path.exists():
            try:
                return torch.load(path, weights_only=True)["images"].to(self.device), labels
            except Exception:
                pass   # a corrupt cache entry is simply rebuilt
        imgs, _ = toyworld.image_set(obj, self.height)   # labels come from the cameras, in this prior's scheme
        with atomic_path(path) as tmp:
            torch.save({"images": imgs}, tmp)
        return imgs.to(self.device), labels

    def encode(self, prompt: str) -> torch.Tensor:
        """The flattened image set (M, C·H·W) the prompt refers to."""
        if self._fixed_images is not None:
            return self._fixed_images.to(self.device).flatten(1)
        view, obj = toyworld.parse_prompt(prompt)
        # The exact prior takes a view of any scheme: its own where it names the view, else the first that does.
        views = next(vs for vs in (self.views, *VIEW_SCHEMES.values()) if view is None or view in vs.labels)
        imgs, labels = self._object_images(obj, views)
        if view is not None:
            imgs = imgs[torch.tensor([lab == view for lab in labels], device=self.device)]
            if imgs.shape[0] == 0:   # no image to denoise towards: D would be 0, a flat grey
                raise SJCError(f"the closed-form prior's image set holds no '{view}' view of {obj.caption}")
        return imgs.flatten(1)

    def D(self, x: torch.Tensor, sigma, cond: torch.Tensor = None, guidance: Optional[float] = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).expand(x.shape[0])
        return mmse_denoise(x.flatten(1), sigma, cond).view_as(x)

    def truth(self, prompt: str):
        return toyworld.parse_prompt(prompt)[1]
