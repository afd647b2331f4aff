"""Text-conditioned diffusers U-Nets (UNet2DConditionModel + CLIP text encoder) as guided VP denoisers.

The same code serves Stable Diffusion (latent space, sjc.priors.stable_diffusion adds the VAE) and the
built-in toy prior (pixel space, no VAE). Components load with `from_pretrained` on a local folder.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch

from ..cameras import REFERENCE_VIEWS, VIEW_SCHEMES, ViewScheme
from ..errors import SJCError
from .loading import HOW_TO_GET, load_failed, offline, pipeline_class, resolve_model, weights_variant
from .base import register_prior
from .vp import VPDenoiserPrior, classifier_free_guidance

# The learned toy-world prior that ships with sjc (trained by `sjc prior train`, see docs/toy-prior.md).
BUILTIN_TOY_MODEL = Path(__file__).resolve().parent.parent / "weights" / "toy32"


def load_text_unet_components(model: str, model_config: Optional[str] = None, dtype=torch.float32):
    """(unet, vae or None, text_encoder, tokenizer, scheduler) from a folder, a cached Hub id or a single file, offline."""
    offline()
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kind, path = resolve_model(model)
    config = base_config(model_config) if kind == "file" and model_config else None
    if model_config and kind != "file":
        raise SJCError(f"--model-config is for a single checkpoint file, but --model {model} is a diffusers folder "
                       "with its own configs: leave --model-config out")
    if kind == "folder":
        missing = [sub for sub in ("unet", "text_encoder", "tokenizer", "scheduler") if not (path / sub).is_dir()]
        if missing:
            raise SJCError(f"{model} has no {', '.join(sub + '/' for sub in missing)}: a text-conditioned diffusers "
                           f"pipeline folder holds unet/, text_encoder/, tokenizer/ and scheduler/; {HOW_TO_GET}")
    try:
        if kind == "file":
            kw = {"local_files_only": True, "torch_dtype": dtype, "safety_checker": None}
            if config:
                kw["config"] = config
            pipe = StableDiffusionPipeline.from_single_file(str(path), **kw)
            return pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, DDPMScheduler.from_config(pipe.scheduler.config)
        load = dict(local_files_only=True, variant=weights_variant(path / "unet"))
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, **load)
        vae = (AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, **load)
               if (Path(path) / "vae").is_dir() else None)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype, **load)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
        return unet, vae, text_encoder, tokenizer, scheduler
    except Exception as e:   # diffusers/transformers raise many types; each becomes one actionable line
        raise load_failed(model, e) from None


def base_config(model_config: str) -> str:
    """--model-config's diffusers folder (a local one or a cached Hub id) for a single checkpoint file."""
    if Path(model_config).suffix in (".yaml", ".yml"):
        raise SJCError(f"--model-config {model_config}: original .yaml configs are not supported; give the base "
                       "model's diffusers folder or cached Hub id (e.g. the SD 1.5 or 2.1 folder)")
    try:
        kind, path = resolve_model(model_config)
    except SJCError as e:
        raise SJCError(f"--model-config: {e}") from None
    if kind == "file" or pipeline_class(path) != "StableDiffusionPipeline":
        raise SJCError(f"--model-config {model_config} is not a Stable Diffusion pipeline folder (its "
                       "model_index.json must name StableDiffusionPipeline); give the base model's diffusers folder")
    return str(path)


def trained_views(model: str) -> ViewScheme:
    """The view-prompt scheme a model folder was trained with (model_index.json's "_sjc_views"; else the reference's)."""
    import json

    kind, path = resolve_model(model)
    index = Path(path) / "model_index.json"
    if kind == "file" or not index.is_file():
        return REFERENCE_VIEWS
    name = json.loads(index.read_text()).get("_sjc_views", REFERENCE_VIEWS.name)
    if name not in VIEW_SCHEMES:
        raise SJCError(f"{model}: unknown view scheme {name!r} in model_index.json; known: {', '.join(VIEW_SCHEMES)}")
    return VIEW_SCHEMES[name]


class TextUNetPrior(VPDenoiserPrior):
    """A UNet2DConditionModel with classifier-free guidance: one batched call for the empty and the real prompt."""

    def __init__(self, unet, text_encoder, tokenizer, scheduler, device, dtype=torch.float32, text_device=None,
                 compile: bool = False, channels_last: Optional[bool] = None, model: str = "the model"):
        super().__init__(scheduler, device, model)
        self.device = torch.device(device)
        unet = unet.to(self.device) if unet.dtype == dtype else unet.to(self.device, dtype)
        # On the CPU oneDNN's convolutions run faster on channels-last (NHWC) tensors (docs/performance.md, `sjc
        # bench unet`). Converting changes the weights' layout in place.
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        if self.channels_last:
            unet = unet.to(memory_format=torch.channels_last)
        self.unet = unet.eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(text_device or self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.dtype = dtype
        # The guided U-Net call is launch-bound on a big GPU: CUDA graphs through torch.compile remove the per-kernel
        # launch cost (docs/priors.md, "Time and memory").
        self._unet_fn = torch.compile(self.unet, mode="reduce-overhead") if compile else self.unet
        self._uncond = None

    @torch.no_grad()
    def embed(self, prompt: str) -> torch.Tensor:
        """CLIP text embedding (1, L, D) of a prompt."""
        tok = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.text_encoder.device))[0].to(self.device, self.dtype)

    def encode(self, prompt: str) -> torch.Tensor:
        """(2, L, D): the empty-prompt embedding and the prompt's, stacked for one batched guided call."""
        if self._uncond is None:
            self._uncond = self.embed("")
        return torch.cat([self._uncond, self.embed(prompt)])

    @torch.no_grad()
    def model_output(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        """cond: encode()'s (2, L, D) for one prompt, or (2B, L, D), B empty then B prompts, one per image."""
        b = x_t.shape[0]
        per_image = cond.shape[0] == 2 * b
        if guidance == 1.0:   # no guidance: the conditional branch alone
            return self._call(x_t.to(self.dtype), t, cond[b:] if per_image else cond[1:].expand(b, -1, -1))
        x_in = torch.cat([x_t, x_t]).to(self.dtype)
        emb = cond if per_image else cond.repeat_interleave(b, dim=0)   # [uncond × b, cond × b]
        out = self._call(x_in, torch.cat([t, t]), emb)
        return classifier_free_guidance(out[:b], out[b:], guidance)

    def _call(self, x, t, emb) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            out = self._unet_fn(x, t, encoder_hidden_states=emb).sample
        except Exception as e:   # a compiler failure must not end the run: fall back to eager once
            if self._unet_fn is self.unet:
                raise
            print(f"sjc: warning: torch.compile failed ({str(e).splitlines()[0][:100]}); running the U-Net eagerly",
                  file=sys.stderr)
            self._unet_fn = self.unet
            out = self.unet(x, t, encoder_hidden_states=emb).sample
        return out.float().contiguous()   # the rest of the method sees the default layout


@register_prior
class PixelTextPrior(TextUNetPrior):
    """A pixel-space text-conditioned U-Net (no VAE): the built-in toy-world prior by default."""

    name = "toy"
    model_flags = ("model", "half", "channels_last")
    pipelines = ("ToyWorldPipeline",)
    builtin_model = BUILTIN_TOY_MODEL
    pixel_space = True
    background_init = 1.0
    appearance_init = "zeros"
    # The settings measured best on the toy world's ground truth (docs/toy-prior.md).
    defaults = {"grid_size": 48, "steps": 2000, "polish_steps": 600, "guidance_scale": 2.0,
                "polish_guidance_scale": 1.5, "emptiness_weight": 10.0,
                "fov_min": 45.0, "fov_max": 60.0}
    sampling_guidance_scale = 3.0   # Heun samples, the 2D check and the 2D PAAS experiment (docs/toy-prior.md)
    sigma_range = (1.0, 10.0)

    @classmethod
    def from_config(cls, cfg, device) -> "PixelTextPrior":
        """The shipped learned prior, unless --model names another pixel-space text U-Net."""
        return cls(cfg.model.model, device, half=cfg.model.half, channels_last=cfg.model.channels_last)

    def __init__(self, model: Optional[str] = None, device="cpu", components=None, half: Optional[bool] = None,
                 channels_last: Optional[bool] = None):
        device = torch.device(device)
        dtype = torch.float16 if (half if half is not None else False) else torch.float32
        unet, vae, text_encoder, tokenizer, scheduler = components or load_text_unet_components(
            str(model or BUILTIN_TOY_MODEL), dtype=dtype)
        if vae is not None or unet.config.in_channels not in (1, 3):
            raise SJCError(f"{model} is a latent diffusion model (it has a VAE or {unet.config.in_channels}-channel "
                           "latents), not a pixel-space one: use --prior sd, or leave --prior out")
        super().__init__(unet, text_encoder, tokenizer, scheduler, device, dtype, channels_last=channels_last,
                         model=str(model or BUILTIN_TOY_MODEL))
        self.builtin = model is None and components is None
        self.channels = self.unet.config.in_channels
        size = self.unet.config.sample_size
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)
        if components is None:
            self.views = trained_views(str(model or BUILTIN_TOY_MODEL))

    def encode(self, prompt: str) -> torch.Tensor:
        if self.builtin and prompt:   # the shipped model knows only toy-world words: say so instead of guessing
            from .. import toyworld
            toyworld.parse_prompt(prompt)
        return super().encode(prompt)

    def truth(self, prompt: str):
        from .. import toyworld
        try:
            return toyworld.parse_prompt(prompt)[1]
        except SJCError:   # not a toy-world prompt: no true object to score against
            return None
