"""Training the built-in learned prior: a small text-conditioned pixel diffusion model of the toy world.

The model is a diffusers UNet2DConditionModel with a 2-layer CLIP text encoder and a word-level CLIP
tokenizer, trained with denoising score matching (v-prediction) on DDPM's linear VP schedule, with
prompt dropout for classifier-free guidance. Captions are "a red cube" or "front view of a red cube".
A fixed set of (shape, colour) combinations is held out of training entirely (HELD_OUT).
"""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from . import toyworld
from .atomic import atomic_path, write_text
from .cameras import REFERENCE_VIEWS, VIEW_SCHEMES, ViewScheme, sample_train_cameras
from .errors import SJCError
from .run_folder import RunFolder
from .settings import setting

# One combination per shape, every one in a different colour; all other 63 combinations are trained.
HELD_OUT: tuple[tuple[str, str], ...] = (
    ("sphere", "purple"), ("cube", "green"), ("cylinder", "red"), ("cone", "cyan"),
    ("torus", "yellow"), ("cube_with_ball", "pink"), ("mug", "orange"),
)
SHAPE_NAMES = list(toyworld.SHAPES)
COLOUR_NAMES = list(toyworld.COLOURS)


def training_pairs() -> list[tuple[int, int]]:
    """(shape index, colour index) of every trained combination."""
    return [(s, c) for s, sn in enumerate(SHAPE_NAMES) for c, cn in enumerate(COLOUR_NAMES) if (sn, cn) not in HELD_OUT]


def captions(shape: str, colour: str, views: ViewScheme = REFERENCE_VIEWS) -> list[str]:
    """The plain caption, then one per view label of the scheme, in its order."""
    base = toyworld.ToyObject(shape, colour).caption
    return [base] + [views.prefix(v) + base for v in views.labels]


# ----------------------------------------------------------------------------------------- dataset
@dataclass
class DatasetConfig:
    """Rendered views per shape; colours are applied at training time (images are linear in albedo)."""
    views: int = setting(2000, "random cameras per shape", min=1)
    resolution: int = setting(32, "image size (pixels per side)", min=8)
    fov_min: float = setting(45.0, "lower end of the cameras' field of view (degrees)", gt=0, lt=180)
    fov_max: float = setting(60.0, "upper end of the cameras' field of view (degrees)", gt=0, lt=180)
    elev_min: float = setting(-6.0, "lowest camera elevation (degrees)", min=-90, max=90)
    elev_max: float = setting(90.0, "highest camera elevation (degrees)", min=-90, max=90)
    radius: float = setting(1.5, "camera distance from the object's centre", gt=0)
    seed: int = setting(0, "camera draw", min=0, lt=2 ** 63)

    def relations(self):
        return [(self.fov_min <= self.fov_max, f"need --fov-min <= --fov-max, got {self.fov_min} and {self.fov_max}"),
                (self.elev_min <= self.elev_max, f"need --elev-min <= --elev-max, got {self.elev_min} and "
                                                 f"{self.elev_max}")]


def build_dataset(cfg: DatasetConfig, out: Path, progress: bool = True) -> Path:
    """Render every shape from `views` random training cameras → out/dataset.pt (coverage maps + cameras)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(cfg.seed)
    shaded, bg, az, el, fov = [], [], [], [], []
    for shape in tqdm(SHAPE_NAMES, desc="rendering shapes", disable=not progress):
        cams = sample_train_cameras(cfg.views, cfg, g)   # SJC's training distribution, with the dataset's ranges
        sh, b = [], []
        for i in range(0, cfg.views, 250):
            s_, b_ = toyworld.render_coverage(shape, cams[i:i + 250], cfg.resolution, cfg.resolution)
            sh.append(s_)
            b.append(b_)
        shaded.append(torch.cat(sh).half())
        bg.append(torch.cat(b).half())
        az.append(cams.azimuth)
        el.append(cams.elevation)
        fov.append(torch.rad2deg(cams.fov))
    data = {"shaded": torch.stack(shaded), "background": torch.stack(bg), "azimuth": torch.stack(az),
            "elevation": torch.stack(el), "fov": torch.stack(fov)}
    path = out / "dataset.pt"
    with atomic_path(path) as tmp:
        torch.save({**data, "config": asdict(cfg), "shapes": SHAPE_NAMES}, tmp)
    return path


def dataset_file(path: Path) -> Path:
    """The dataset.pt that a --data path (a folder or the .pt file) names; one line if there is none."""
    path = Path(path)
    path = path / "dataset.pt" if path.is_dir() or path.suffix != ".pt" else path   # a folder, made or not yet
    if not path.is_file():
        raise SJCError(f"no toy-world dataset at {path}: build one with `sjc prior dataset --out {path.parent}`")
    return path


def load_dataset(path: Path) -> dict:
    """A dataset written by build_dataset (a folder or the .pt file)."""
    path = dataset_file(path)
    try:
        data = torch.load(path, weights_only=True)
    except Exception as e:
        raise SJCError(f"{path} is not a readable sjc dataset ({type(e).__name__}); rebuild it with `sjc prior dataset`") from None
    if data.get("shapes") != SHAPE_NAMES:
        raise SJCError(f"{path} was built for other shapes; rebuild it with `sjc prior dataset`")
    return data


# ------------------------------------------------------------------------------------------ model
def word_tokenizer(folder: Path, max_length: int = 16, views: ViewScheme = REFERENCE_VIEWS):
    """A CLIP BPE tokenizer whose merges spell every toy-world word as one token (characters as fallback)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for s in SHAPE_NAMES for c in COLOUR_NAMES for cap in captions(s, c, views) for w in cap.split()})
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,'-")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for w in words + ["an"]:   # add merges until BPE spells the word as one token (earlier words stay whole)
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            ranks = [merges.index(p) if p in merges else len(merges) for p in zip(parts, parts[1:])]
            i = min(range(len(ranks)), key=ranks.__getitem__)
            if ranks[i] == len(merges):
                merges.append((parts[i], parts[i + 1]))
                vocab.setdefault(parts[i] + parts[i + 1], len(vocab))
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length,
                         pad_token="<|endoftext|>")


@dataclass
class UNetConfig:
    """Architecture of the learned toy prior."""
    resolution: int = setting(32, "image size (the dataset's)", cli=False)
    channels: tuple[int, ...] = setting((48, 96, 192), "U-Net block widths (cross-attention in the lowest-resolution "
                                                        "blocks)", min=1)
    norm_groups: int = setting(16, "GroupNorm groups; every width a multiple", min=1)
    text_width: int = setting(64, "text encoder width, a multiple of 4")
    text_layers: int = setting(2, "text encoder layers")
    prediction_type: str = setting("v_prediction", "what the U-Net predicts", choices=("epsilon", "v_prediction"))
    views: str = setting("fine-bands", "view-prompt scheme of the captions: reference (front, side, back, overhead), "
                                       "fine (45° sectors, left and right apart) or fine-bands (fine + low/mid/top: the "
                                       "shipped model's)", choices=tuple(VIEW_SCHEMES))

    def relations(self):
        return [(self.text_width >= 4 and self.text_width % 4 == 0 and self.text_layers >= 1,   # 4 attention heads
                 f"need --text-width a positive multiple of 4 and --text-layers >= 1, got {self.text_width} and "
                 f"{self.text_layers}"),
                (all(c % self.norm_groups == 0 for c in self.channels),
                 f"every --channels width must be a multiple of --norm-groups {self.norm_groups}, got "
                 f"{' '.join(map(str, self.channels))}")]


def build_model(cfg: UNetConfig, tok_folder: Path, seed: int = 0):
    """(unet, text_encoder, tokenizer, scheduler), randomly initialised."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = word_tokenizer(tok_folder, views=VIEW_SCHEMES[cfg.views])
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_width, intermediate_size=2 * cfg.text_width,
        num_hidden_layers=cfg.text_layers, num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    n = len(cfg.channels)
    unet = UNet2DConditionModel(
        sample_size=cfg.resolution, in_channels=3, out_channels=3, block_out_channels=tuple(cfg.channels),
        layers_per_block=1, down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1), cross_attention_dim=cfg.text_width,
        attention_head_dim=8, norm_num_groups=cfg.norm_groups)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              prediction_type=cfg.prediction_type, clip_sample=False)
    return unet, text_encoder, tokenizer, scheduler


def save_pipeline(folder: Path, unet, text_encoder, tokenizer, scheduler, views: str = "reference",
                  dtype: torch.dtype = torch.float32) -> Path:
    """Write a diffusers-format folder (unet/, text_encoder/, tokenizer/, scheduler/, model_index.json), atomically.

    dtype: the weights as stored (float16 halves the folder; loading casts them to the dtype asked for)."""
    import shutil
    import tempfile

    import diffusers

    from .priors.loading import offline

    offline()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.sjc-tmp", dir=folder.parent))
    try:
        for name, module in (("unet", unet), ("text_encoder", text_encoder)):
            (copy.deepcopy(module).to(dtype) if dtype != module.dtype else module).save_pretrained(tmp / name)
        tokenizer.save_pretrained(tmp / "tokenizer")
        scheduler.save_pretrained(tmp / "scheduler")
        index = {"_class_name": "ToyWorldPipeline", "_diffusers_version": diffusers.__version__,
                 "unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"],
                 "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDPMScheduler"],
                 "_sjc_views": views}   # the view-prompt scheme of its captions (diffusers ignores "_" keys)
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# --------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Denoising score matching on the toy world (the defaults are the shipped model's recipe)."""
    steps: int = setting(7000, "optimiser steps", min=1)
    batch: int = setting(64, "images per step", min=1)
    lr: float = setting(5e-4, "AdamW's peak learning rate", gt=0)
    warmup: int = setting(200, "steps of linear learning-rate warm-up (0: none), then a cosine decay to 0", min=0)
    ema_decay: float = setting(0.999, "decay of the weights' exponential moving average (the saved model)", min=0, lt=1)
    cond_dropout: float = setting(0.1, "share of empty captions (classifier-free guidance)", min=0, max=1)
    view_caption: float = setting(0.8, "share of the remaining captions with a view prefix", min=0, max=1)
    checkpoint_every: int = setting(250, "state.pt every N steps (the run resumes from it)", min=1)
    sample_every: int = setting(1000, "a samples grid every N steps", min=1)
    log_every: int = setting(10, "loss.csv gets the mean loss of every log_every steps", min=1)
    seed: int = setting(0, "initialisation, batches and timesteps", min=0, lt=2 ** 63)
    threads: int = setting(0, "torch CPU threads (0: torch's default)", min=0)
    init: str = setting("", 'start from this model folder\'s weights (fine-tuning; "" = random init)')
    timestep_power: float = setting(1.0, "t = ⌊T·u^p⌋, u uniform: 1 is uniform, p > 1 spends more steps at small σ",
                                    gt=0)
    precision: str = setting("bfloat16", "the forward pass: float32, or bfloat16 under autocast (the weights stay "
                                         "float32)", choices=("float32", "bfloat16"))
    weights_dtype: str = setting("float16", "dtype of the saved model's weights: float32, or float16 (half the size)",
                                 choices=("float32", "float16"))

    def relations(self):
        return [(not self.init or (Path(self.init) / "unet").is_dir(),
                 f"--init {self.init}: not a toy prior folder (it has no unet/); give e.g. sjc/weights/toy32")]


class CaptionTable:
    """Every caption tokenised once: row = pair·(1 + views) + variant (0 plain, 1.. views), last the empty caption."""

    def __init__(self, tokenizer, views: ViewScheme = REFERENCE_VIEWS):
        self.views = views
        rows = [cap for s in SHAPE_NAMES for c in COLOUR_NAMES for cap in captions(s, c, views)] + [""]
        self.ids = tokenizer(rows, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids
        self.empty = len(rows) - 1

    def row(self, shape: torch.Tensor, colour: torch.Tensor, variant: torch.Tensor) -> torch.Tensor:
        """The table row of each (shape, colour, caption variant): variant 0 the plain caption, k the k-th view's."""
        return (shape * len(COLOUR_NAMES) + colour) * (1 + len(self.views.labels)) + variant


def sample_batch(data: dict, pairs: torch.Tensor, table: CaptionTable, cfg: TrainConfig, g: torch.Generator):
    """A training batch: images (B, 3, H, W) in [-1, 1] and caption token ids (B, L)."""
    b = cfg.batch
    p = pairs[torch.randint(len(pairs), (b,), generator=g)]
    v = torch.randint(data["shaded"].shape[1], (b,), generator=g)
    s, c = p[:, 0], p[:, 1]
    albedo = torch.tensor(list(toyworld.COLOURS.values()))[c]
    img = toyworld.colourise(data["shaded"][s, v].float(), data["background"][s, v].float(), albedo)
    u = torch.rand(2, b, generator=g)
    variant = torch.where(u[1] < cfg.view_caption, 1 + table.views.index(data["azimuth"][s, v], data["elevation"][s, v]), 0)
    rows = torch.where(u[0] < cfg.cond_dropout, table.empty, table.row(s, c, variant))
    return img, table.ids[rows]


def sample_timesteps(n: int, num_train_timesteps: int, power: float, g: torch.Generator) -> torch.Tensor:
    """Training timesteps ⌊T·u^power⌋ (uniform at power 1; more of the small-σ end above it)."""
    if power == 1.0:
        return torch.randint(num_train_timesteps, (n,), generator=g)
    u = torch.rand(n, generator=g) ** power
    return (u * num_train_timesteps).long().clamp_max(num_train_timesteps - 1)


def dsm_loss(unet, text_encoder, scheduler, x0, ids, g: torch.Generator, timestep_power: float = 1.0) -> torch.Tensor:
    """Denoising score matching at drawn timesteps (sample_timesteps), on the model's prediction target (ε or v)."""
    t = sample_timesteps(x0.shape[0], scheduler.config.num_train_timesteps, timestep_power, g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    emb = text_encoder(ids)[0]
    return torch.nn.functional.mse_loss(unet(x_t, t, encoder_hidden_states=emb).sample.float(), target)


# (shape, colour, view label or None) of the training sample grids: four trained objects, then four held out; the two
# views are labels of every scheme, so each prompt is one the model was trained on (in its captions' words).
SAMPLES = [("sphere", "blue", None), ("cube", "red", None), ("torus", "green", None), ("mug", "gray", "front"),
           ("sphere", "purple", None), ("cube", "green", None), ("cube_with_ball", "pink", None), ("mug", "orange", "back")]


def write_samples(path: Path, unet, text_encoder, tokenizer, scheduler, steps: int = 20, seed: int = 0) -> Path:
    """A grid of Heun samples (one per SAMPLES entry; the last four are held out)."""
    from .export import save_image
    from .priors.text_unet import PixelTextPrior
    from .sample2d import heun_sample

    # The EMA weights stay in the default layout: they are averaged into and saved (safetensors wants contiguous).
    prior = PixelTextPrior(components=(unet, None, text_encoder, tokenizer, scheduler), channels_last=False)
    g = torch.Generator().manual_seed(seed)
    prompts = [(prior.views.prefix(view) if view else "") + toyworld.ToyObject(shape, colour).caption
               for shape, colour, view in SAMPLES]
    imgs = torch.cat([heun_sample(prior, 1, steps, 0.02, 80.0, p, None, g) for p in prompts])
    return save_image(path, imgs, scale=2, ncol=len(SAMPLES) // 2)


def plot_loss(csv_path: Path, png_path: Path) -> Optional[Path]:
    """The loss curve (log scale) as a PNG, if matplotlib is installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step (batch of 64)")
    ax.set_ylabel("v-prediction MSE (mean of 10 steps)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


# Settings a resumed run may change (a new --steps reshapes the rest of the cosine learning-rate decay; the
# weights' dtype is only how the finished model is saved).
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "sample_every", "log_every", "threads", "weights_dtype")


# What a checkpoint written before a field existed ran with (not today's defaults, which moved since).
BEFORE_FIELDS = {"timestep_power": 1.0, "precision": "float32", "weights_dtype": "float32", "norm_groups": 32}


def _as_saved(saved: dict, cls, keys) -> dict:
    """A checkpoint's config at `keys`, fields it predates taken at what it ran with (BEFORE_FIELDS)."""
    return {k: saved.get(k, BEFORE_FIELDS.get(k, getattr(cls, k))) for k in keys}


def native_bfloat16() -> bool:
    """Whether this CPU runs bfloat16 natively (oneDNN's own test: AVX512-BF16, AMX, or Arm's BF16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):   # a torch without oneDNN: no fast bfloat16 either
        return False


def precision_warning(precision: str) -> Optional[str]:
    """One line for a run asked to train in bfloat16 on a CPU that only emulates it; None where it is fine."""
    if precision != "bfloat16" or native_bfloat16():
        return None
    return ("sjc: warning: this CPU has no native bfloat16, so --precision bfloat16 (the default) trains over 10× "
            "slower here than float32 (116 s against 10 s a step on a 2-core AMD EPYC with AVX2; 0.93 s in bfloat16 "
            "with AVX512-BF16); --precision float32 is the fast choice on this CPU (its model is not bit for bit "
            "the shipped one)")


def train_prior(data_path: Path, out: Path, cfg: TrainConfig, model_cfg: Optional[UNetConfig] = None,
                progress: bool = True, stop_after: Optional[int] = None) -> Optional[Path]:
    """Train (or resume) the toy prior in `out`; writes state.pt, loss.csv, samples/, and the EMA model in model/.

    stop_after: end this call after that many steps (checkpointed; run again to continue). Returns the
    model folder, or None when stopped early.
    """
    dataset_file(data_path)   # a missing dataset fails before any folder is made
    # One writer per folder (two trainings would overwrite each other's state), a failed write or Ctrl-C one line.
    with RunFolder(out, "sjc prior train", checkpoint=out / "state.pt", step_of=None,
                   resume="the same sjc prior train command", what="the training") as folder:
        folder.create("--out")
        return _train_prior(load_dataset(data_path), out, cfg, model_cfg, progress, stop_after)


def _train_prior(data: dict, out: Path, cfg: TrainConfig, model_cfg: Optional[UNetConfig],
                 progress: bool, stop_after: Optional[int]) -> Optional[Path]:
    """train_prior's work, with its folder held."""
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if warning := precision_warning(cfg.precision):
        print(warning, file=sys.stderr)
    model_cfg = replace(model_cfg or UNetConfig(), resolution=data["shaded"].shape[-1])   # the data's image size
    unet, text_encoder, tokenizer, scheduler = build_model(model_cfg, out / "tokenizer", cfg.seed)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / max(cfg.warmup, 1))
                                              * 0.5 * (1 + math.cos(math.pi * min(i, cfg.steps) / cfg.steps)))
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    g = torch.Generator().manual_seed(cfg.seed)
    step, running = 0, []
    state_path = out / "state.pt"
    dataset = {"config": data.get("config"), "images": list(data["shaded"].shape)}   # what the run trains on
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        if st.get("data", dataset) != dataset:   # checkpoints from before 2026-12-06 did not record it
            raise SJCError(f"{out} holds a training run on another dataset ({st['data']['config']}); resume it with "
                           f"that run's --data, or use a new --out")
        same = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
        if _as_saved(st["train"], TrainConfig, same) != same or _as_saved(st["model"], UNetConfig, asdict(model_cfg)) \
                != asdict(model_cfg):
            raise SJCError(f"{out} holds a training run with another configuration; resume it with the same "
                           f"flags (see {out / 'config.json'}) or use a new --out")
        unet.load_state_dict(st["unet"])
        text_encoder.load_state_dict(st["text_encoder"])
        ema_unet.load_state_dict(st["ema_unet"])
        ema_text.load_state_dict(st["ema_text"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        g.set_state(st["rng"])
        step = st["step"]
        running = list(st.get("running", []))   # the losses since the last logged step (its mean goes on from them)
    write_text(out / "config.json", json.dumps({"train": asdict(cfg), "model": asdict(model_cfg)}, indent=2))
    if cfg.init and step == 0:
        init_from(Path(cfg.init), unet, text_encoder, tokenizer)
        ema_unet.load_state_dict(unet.state_dict())
        ema_text.load_state_dict(text_encoder.state_dict())
    table = CaptionTable(tokenizer, VIEW_SCHEMES[model_cfg.views])
    pairs = torch.tensor(training_pairs())
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    log_path = out / "loss.csv"
    rows = []
    if step and log_path.exists():
        with open(log_path, newline="") as f:
            rows = list(csv.reader(f))
    rows = rows[:1] + [r for r in rows[1:] if int(r[0]) <= step]   # drop rows logged after the checkpoint
    t0 = time.time() - (float(rows[-1][3]) if len(rows) > 1 else 0.0)
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    # A resume trims the log to the checkpoint, atomically: a kill now cannot lose the rows before it.
    kept = io.StringIO()
    csv.writer(kept).writerows(rows or [["step", "loss", "lr", "seconds"]])
    write_text(log_path, kept.getvalue())
    with open(log_path, "a", newline="") as log, \
            tqdm(total=cfg.steps, initial=step, desc="training prior", disable=not progress) as bar:
        writer = csv.writer(log)
        while step < end:
            x0, ids = sample_batch(data, pairs, table, cfg, g)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bfloat16"):
                loss = dsm_loss(unet, text_encoder, scheduler, x0, ids, g, cfg.timestep_power)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1 - decay)
            running.append(loss.detach())   # no host sync per step; averaged when logged
            bar.update(1)
            if step % cfg.log_every == 0:
                mean_loss = torch.stack(running).double().mean().item()
                writer.writerow([step, f"{mean_loss:.5f}", f"{sched.get_last_lr()[0]:.3g}", f"{time.time() - t0:.1f}"])
                log.flush()
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                running = []
            if step % cfg.checkpoint_every == 0 or step == end:
                st = {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "ema_unet": ema_unet.state_dict(),
                      "ema_text": ema_text.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                      "rng": g.get_state(), "step": step, "train": asdict(cfg), "model": asdict(model_cfg),
                      "data": dataset, "running": torch.stack(running) if running else torch.zeros(0)}
                with atomic_path(state_path) as tmp:
                    torch.save(st, tmp)
            if step % cfg.sample_every == 0 or step == cfg.steps:
                write_samples(out / "samples" / f"step{step:06d}.png", ema_unet, ema_text, tokenizer, scheduler)
                plot_loss(log_path, out / "loss.png")
    if step < cfg.steps:
        return None
    return save_pipeline(out / "model", ema_unet, ema_text, tokenizer, scheduler, model_cfg.views,
                         getattr(torch, cfg.weights_dtype))


def init_from(folder: Path, unet, text_encoder, tokenizer) -> None:
    """Load a trained toy prior's weights into a fresh model; word embeddings move to their ids in the new vocabulary.

    Words the old tokenizer lacks (new view words) keep their random embedding and are learnt by fine-tuning.
    """
    from .priors.text_unet import load_text_unet_components

    old_unet, _, old_text, old_tok, _ = load_text_unet_components(str(folder))
    try:
        unet.load_state_dict(old_unet.state_dict())
        state = old_text.state_dict()
        key = next(k for k, v in text_encoder.named_parameters() if v is text_encoder.get_input_embeddings().weight)
        emb = text_encoder.state_dict()[key].clone()
        old_vocab = old_tok.get_vocab()
        for tok, i in tokenizer.get_vocab().items():
            if tok in old_vocab:
                emb[i] = state[key][old_vocab[tok]]
        state[key] = emb
        text_encoder.load_state_dict(state)
    except RuntimeError as e:
        raise SJCError(f"--init {folder}: its architecture differs from this model's ({str(e).splitlines()[0]})") from None
