"""Unconditional pixel-space diffusers UNet2DModel priors: VP (DDPM/DDIM, ε or v) and VE (score-SDE) schedules."""
from __future__ import annotations

import math
import sys
from typing import Optional

import torch

from .base import Prior, register_prior
from .loading import load_failed, offline, pipeline_class, resolve_model, weights_variant
from .vp import VPDenoiserPrior


def load_unet2d(model: str, dtype=torch.float32):
    """(unet, scheduler) from a pipeline folder (unet/ + scheduler/) or a bare UNet2DModel folder, offline."""
    offline()
    from diffusers import DDPMScheduler, ScoreSdeVeScheduler, UNet2DModel

    kind, path = resolve_model(model)
    if kind == "file":
        from ..errors import SJCError
        raise SJCError(f"{path}: single-file checkpoints are supported for Stable Diffusion only; "
                       "give a UNet2DModel pipeline folder")
    try:
        if pipeline_class(path) is None:   # a bare model folder: assume the DDPM linear schedule, and say so
            unet = UNet2DModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True,
                                               variant=weights_variant(path))
            print(f"sjc: warning: {model} is a bare UNet2DModel folder with no scheduler: assuming DDPM's linear β "
                  "schedule (1,000 steps, ε prediction); pass the pipeline folder above it if it has one",
                  file=sys.stderr)
            return unet, DDPMScheduler()
        unet = UNet2DModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, local_files_only=True,
                                           variant=weights_variant(path / "unet"))
        sched_cfg = DDPMScheduler.load_config(path, subfolder="scheduler", local_files_only=True)
        if sched_cfg.get("_class_name") == "ScoreSdeVeScheduler":
            return unet, ScoreSdeVeScheduler.from_config(sched_cfg)
        return unet, DDPMScheduler.from_config(sched_cfg)
    except Exception as e:
        raise load_failed(model, e) from None


@register_prior
class UNet2DPrior(Prior):
    """Unconditional pixel-space UNet2DModel priors: data shape from the U-Net, no text; `from_config` loads the
    weights and picks the VP or the VE adapter below by the model's scheduler."""

    name = "unet2d"
    model_flags = ("model", "half")
    pipelines = ("DDPMPipeline", "DDIMPipeline", "ScoreSdeVePipeline")
    model_classes = ("UNet2DModel",)
    pixel_space = True

    @classmethod
    def from_config(cls, cfg, device) -> Prior:
        offline()   # before diffusers is imported: huggingface_hub reads its settings at import
        from diffusers import ScoreSdeVeScheduler

        device = torch.device(device)
        half = cfg.model.half
        dtype = torch.float16 if (half if half is not None else device.type == "cuda") else torch.float32
        unet, scheduler = load_unet2d(cfg.model.model, dtype)
        unet = unet.to(device).eval().requires_grad_(False)
        if isinstance(scheduler, ScoreSdeVeScheduler):
            return UNet2DVEPrior(unet, scheduler, device)
        return UNet2DVPPrior(unet, scheduler, device, cfg.model.model)

    def _set_shape(self, unet) -> None:
        self.unet = unet
        self.channels = unet.config.in_channels
        size = unet.config.sample_size
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)

    def encode(self, prompt: str):
        return None


class UNet2DVPPrior(UNet2DPrior, VPDenoiserPrior):
    """A DDPM/DDIM-trained UNet2DModel as D(x, σ) on RGB in [-1, 1]."""

    def __init__(self, unet, scheduler, device, model: str = "the model"):
        VPDenoiserPrior.__init__(self, scheduler, device, model)
        self._set_shape(unet)

    @torch.no_grad()
    def model_output(self, x_t, t, cond, guidance):
        return self.unet(x_t.to(self.unet.dtype), t).sample.float()


class UNet2DVEPrior(UNet2DPrior):
    """A score-SDE (NCSN++) UNet2DModel: the network returns ∇ log p_σ(x), so D(x, σ) = x + σ²·s_θ(x, σ)."""

    def __init__(self, unet, scheduler, device, n_sigmas: int = 1000):
        super().__init__()
        self._set_shape(unet)
        c = scheduler.config
        self.sigmas = torch.logspace(math.log10(c.sigma_min), math.log10(c.sigma_max), n_sigmas, device=device)

    @torch.no_grad()
    def D(self, x, sigma, cond=None, guidance: Optional[float] = None):
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(x.shape[0])
        score = self.unet(x.to(self.unet.dtype), sigma.to(self.unet.dtype)).sample.float()
        return x + sigma.view(-1, 1, 1, 1) ** 2 * score
