"""Tiny random diffusers pipelines built offline from configs: for tests, CPU smoke runs and GPU timing."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def _tiny_tokenizer(folder: Path):
    """A CLIP BPE tokenizer over single characters (no merges), written to `folder`."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,'-")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16), len(vocab)


def sd_scheduler(prediction_type: str = "epsilon"):
    """SD's training schedule: 1000 steps, scaled-linear β from 0.00085 to 0.012."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type=prediction_type, clip_sample=False, steps_offset=1)


def build_tiny_sd(folder, prediction_type: str = "epsilon", seed: int = 0, latent_size: int = 8,
                  full_size_unet: bool = False) -> Path:
    """Save a random StableDiffusionPipeline (tiny U-Net, VAE ×2, 2-layer CLIP) to `folder`.

    full_size_unet=True uses SD 1.5's U-Net architecture (860M parameters) for timing.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer, vocab_size = _tiny_tokenizer(folder / "_tok")
    hidden = 768 if full_size_unet else 32
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                                                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1))
    if full_size_unet:
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)   # diffusers' defaults = SD 1.x
    else:
        unet = UNet2DConditionModel(sample_size=latent_size, block_out_channels=(32, 64), layers_per_block=1,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                        sample_size=2 * latent_size)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sd_scheduler(prediction_type), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_unet2d(folder, schedule: str = "ddpm", prediction_type: str = "epsilon", size: int = 8,
                      seed: int = 0) -> Path:
    """Save a random unconditional UNet2DModel pipeline (DDPM or score-SDE VE) to `folder`."""
    from diffusers import DDPMPipeline, DDPMScheduler, ScoreSdeVePipeline, ScoreSdeVeScheduler, UNet2DModel

    torch.manual_seed(seed)
    ve = schedule == "ve"
    unet = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=32, time_embedding_type="fourier" if ve else "positional")
    if ve:
        ScoreSdeVePipeline(unet=unet, scheduler=ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0)).save_pretrained(folder)
    else:
        sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
        DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return Path(folder)
