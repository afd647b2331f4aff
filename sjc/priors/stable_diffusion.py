"""Stable Diffusion 1.x / 2.x (diffusers) as an SJC prior: a guided VP latent denoiser with text embeddings."""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import SJCError
from .base import register_prior
from .text_unet import TextUNetPrior, load_text_unet_components


def load_sd_components(model: str, model_config: Optional[str] = None, dtype=torch.float32):
    """(unet, vae, text_encoder, tokenizer, scheduler) of a Stable Diffusion model, offline."""
    parts = load_text_unet_components(model, model_config, dtype)
    if parts[1] is None:
        raise SJCError(f"{model} has no vae/ folder: it is not a Stable Diffusion model (a pixel-space "
                       "text-conditioned U-Net loads with --prior toy)")
    return parts


@register_prior
class StableDiffusionPrior(TextUNetPrior):
    """SD's U-Net with classifier-free guidance; the field renders 4-channel latents directly, the VAE decodes."""

    name = "sd"
    model_flags = ("model", "model_config", "half", "attention_slicing", "offload", "compile", "channels_last")
    pipelines = ("StableDiffusionPipeline",)
    single_file = True
    pixel_space = False
    defaults = {"grid_size": 100, "steps": 10000, "guidance_scale": 100.0, "emptiness_weight": 1e4,
                "fov_min": 40.0, "fov_max": 70.0}
    appearance_init = "randn"
    background_init = 0.0
    sampling_guidance_scale = 7.5   # 2D samples: SD's usual scale (guidance 100 is for SJC's score, and burns a sample out)

    @classmethod
    def from_config(cls, cfg, device) -> "StableDiffusionPrior":
        m = cfg.model
        return cls(m.model, device, m.model_config, m.half, m.attention_slicing, m.offload, compile=m.compile,
                   channels_last=m.channels_last)

    def __init__(self, model: str, device="cpu", model_config: Optional[str] = None, half: Optional[bool] = None,
                 attention_slicing: bool = False, offload: bool = False, components=None,
                 compile: Optional[bool] = None, channels_last: Optional[bool] = None):
        device = torch.device(device)
        half = (device.type == "cuda") if half is None else half
        dtype = torch.float16 if half else torch.float32
        unet, vae, text_encoder, tokenizer, scheduler = components or load_sd_components(model, model_config, dtype)
        aux = torch.device("cpu") if offload else device   # text encoder and VAE run rarely
        super().__init__(unet, text_encoder, tokenizer, scheduler, device, dtype, text_device=aux,
                         compile=compile if compile is not None else device.type == "cuda", channels_last=channels_last,
                         model=str(model))
        self.vae = vae.to(aux, torch.float32).eval().requires_grad_(False)
        if attention_slicing:
            self.unet.set_attention_slice("auto")
        self.channels = self.unet.config.in_channels
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.height = self.width = self.unet.config.sample_size or (self.vae.config.sample_size // factor)
        self.scaling = self.vae.config.scaling_factor
        self._rgb_map = None

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents → RGB in [-1, 1] through the VAE decoder."""
        dev = self.vae.device
        imgs = [self.vae.decode((x[i:i + 1] / self.scaling).to(dev, self.vae.dtype)).sample.float() for i in range(x.shape[0])]
        return torch.cat(imgs).clamp(-1, 1).to(x.device)

    @torch.no_grad()
    def feature_to_rgb(self, features: torch.Tensor) -> torch.Tensor:
        """Per-vertex latents → RGB by a linear map fitted once to the VAE decoder on smooth random latents."""
        if self._rgb_map is None:
            g = torch.Generator().manual_seed(0)
            lat = torch.nn.functional.interpolate(torch.randn(4, self.channels, 4, 4, generator=g), size=(16, 16),
                                                  mode="bilinear", align_corners=False)
            rgb = torch.nn.functional.adaptive_avg_pool2d(self.decode(lat), 16)
            rgb = rgb.cpu().permute(0, 2, 3, 1).reshape(-1, 3)
            a = torch.cat([lat.permute(0, 2, 3, 1).reshape(-1, self.channels), torch.ones(rgb.shape[0], 1)], 1)
            self._rgb_map = torch.linalg.lstsq(a, rgb).solution
        a = torch.cat([features.float(), torch.ones(features.shape[0], 1, device=features.device)], 1)
        return (a @ self._rgb_map.to(features.device)).clamp(-1, 1)
