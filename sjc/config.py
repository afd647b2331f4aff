"""Typed run configuration: one dataclass per concept, every field a CLI flag, saved beside outputs."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from .cameras import VIEW_SCHEMES
from .errors import SJCError


@dataclass
class FieldConfig:
    """The voxel radiance field."""
    grid_size: Optional[int] = None  # voxels per side of the box [-1, 1]^3 (None: the prior's default)
    density_shift: float = -1.0    # density = softplus(raw * exp(d_scale) + shift)


@dataclass
class RenderConfig:
    """The differentiable volume renderer."""
    resolution: Optional[int] = None  # rays per side of a rendered view (None: the prior's data size)
    step_ratio: float = 0.5        # sample spacing in voxels (reference: half a voxel)
    weight_threshold: float = 1e-4  # appearance is only looked up where w exceeds this
    far_depth: float = 10.0        # depth assigned to the background
    renderer: str = "fast"         # fast (fused C++ on CPU, else packed) | fused | packed | dense (the reference)
    occupancy_threshold: float = 1e-3  # fast renderer: cells whose neighbourhood density stays below this are skipped
    occupancy_every: int = 8       # fast renderer: refresh the occupancy grid every N steps


@dataclass
class CameraConfig:
    """Training camera distribution (reference defaults)."""
    radius: float = 1.5            # camera distance from the origin
    elev_min: float = -6.0         # lowest training elevation (degrees)
    elev_max: float = 90.0         # highest training elevation (degrees)
    fov_min: Optional[float] = None   # None: the prior's FoV range (reference: 40 to 70 degrees)
    fov_max: Optional[float] = None   # upper end of the training FoV range (degrees; None: the prior's)
    test_fov: float = 60.0         # FoV of previews, video and evaluation views (degrees)
    video_frames: int = 100        # frames of the spiral turntable video


@dataclass
class GuidanceConfig:
    """How the 2D prior's score becomes an image-space gradient."""
    method: str = "paas"           # guidance: paas | paas-plain | naive | sds | oracle
    num_noise: int = 1             # K noise samples averaged per step
    sigma_min: Optional[float] = None  # lower end of the σ draw (None: the prior's range)
    sigma_max: Optional[float] = None  # upper end of the σ draw (None: the prior's range)
    guidance_scale: Optional[float] = None  # None: the prior's default
    view_prompts: bool = True      # prefix "front view of" etc. by camera
    view_scheme: Optional[str] = None  # reference (4 views) | fine (45° sectors) | fine-bands (+ elevation words); None: the prior's own
    polish_sigma_min: float = 0.05     # σ range of the appearance polish (data units)
    polish_sigma_max: float = 0.5      # upper end of the polish's σ range (data units)
    polish_guidance_scale: Optional[float] = None  # guidance scale of the polish (None: the prior's default, else --guidance-scale)
    polish_num_noise: Optional[int] = None  # noise samples averaged per polish step (None: the prior's default, else --num-noise)

    def polish_follows_sjc(self) -> None:
        """Fill the polish's unset guidance scale and noise count with the SJC steps' own."""
        if self.polish_guidance_scale is None:
            self.polish_guidance_scale = self.guidance_scale
        if self.polish_num_noise is None:
            self.polish_num_noise = self.num_noise


@dataclass
class RegConfig:
    """Regularisers."""
    emptiness_weight: Optional[float] = None  # None: the prior's default
    emptiness_scale: float = 10.0  # s in log(1 + s·w)
    emptiness_mult: float = 20.0   # emptiness weight multiplier late in the run
    emptiness_mult_after: float = 0.5  # fraction of the steps after which the multiplier applies
    emptiness_mult_step: Optional[int] = None  # the step the multiplier starts (None: mult_after × steps, fixed at creation)
    center_depth_weight: float = 0.0  # pull the object to the view centre (10–100 for some prompts)


@dataclass
class OptimConfig:
    """Adamax with per-group learning rates (reference defaults)."""
    steps: Optional[int] = None    # optimisation steps (None: the prior's default)
    polish_steps: Optional[int] = None  # appearance-only steps after them, at small σ (None: the prior's default)
    lr: float = 0.05               # Adamax learning rate of density, appearance and d_scale
    bg_lr: float = 1e-4            # Adamax learning rate of the background
    seed: int = 0                  # same seed and config → the same field (on CPU, with the same number of threads)


@dataclass
class OutputConfig:
    """What a run writes and how often."""
    out_dir: Optional[str] = None  # run folder (None: outputs/<prompt-slug>)
    ckpt_every: int = 200          # checkpoint interval (steps)
    preview_every: int = 250       # preview image interval (steps)
    video: bool = True             # write the turntable video (--no-video to skip)
    mesh: bool = True              # write GLB and PLY meshes (--no-mesh to skip)
    overwrite: bool = False        # replace a run already in out_dir
    device: str = "auto"           # auto (cuda when available, else cpu), cpu, cuda or cuda:N


@dataclass
class ModelConfig:
    """Pretrained weights for the diffusers priors (sd, unet2d)."""
    model: Optional[str] = None         # diffusers folder, cached Hub id, or single .safetensors/.ckpt file
    model_config: Optional[str] = None  # for a single file: the base model's diffusers folder or cached id
    half: Optional[bool] = None         # fp16 U-Net (None: on CUDA for diffusers models; the toy prior stays fp32)
    attention_slicing: bool = False     # lower peak memory on small cards (the sd prior)
    offload: bool = False               # keep the text encoder and VAE on the CPU, only the U-Net on the GPU (the sd prior)
    compile: Optional[bool] = None      # torch.compile the U-Net with CUDA graphs (the sd prior; None: on CUDA only)
    channels_last: Optional[bool] = None  # U-Net in the channels-last memory layout (sd and toy; None: on the CPU only)


@dataclass
class RunConfig:
    """Everything that defines a run; written as config.json beside its outputs."""
    prompt: str = ""
    prior: Optional[str] = None    # toy | closed-form | sd | unet2d (None: the learned toy prior, or detected from --model)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    guidance: GuidanceConfig = dataclasses.field(default_factory=GuidanceConfig)
    reg: RegConfig = dataclasses.field(default_factory=RegConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    # The values the run filled in itself (its prior's defaults, or derived from other fields), by section.name:
    # a new run from this config that changes what one depends on derives it again (forget_resolved).
    resolved: dict[str, Any] = dataclasses.field(default_factory=dict)

    SECTIONS = ("model", "field", "render", "camera", "guidance", "reg", "optim", "output")

    def to_dict(self) -> dict:
        """Every field, nested by section, as plain JSON-able values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A config from to_dict()'s form (sections as nested dicts)."""
        d = dict(d)
        kw: dict[str, Any] = {}
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        for f in fields(cls):
            if f.name not in d:
                continue
            if f.name in cls.SECTIONS:
                sec_type = type(getattr(cls(), f.name))
                extra = set(d[f.name]) - {g.name for g in fields(sec_type)}
                if extra:
                    raise ValueError(f"unknown keys in {f.name}: {sorted(extra)}")
                kw[f.name] = sec_type(**d[f.name])
            else:
                kw[f.name] = d[f.name]
        return cls(**kw)

    def save(self, path: Path) -> None:
        """Write the config as JSON, atomically."""
        from .atomic import write_text
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        """Read a config.json, or fail with one line that names the file."""
        try:
            cfg = cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise SJCError(f"cannot read run config {path}: {e}") from None
        cfg.check_types(str(path))
        return cfg

    def check_types(self, where: str = "config") -> "RunConfig":
        """Every leaf holds a value of its declared type (None where Optional)."""
        kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise SJCError(f"{where}: prompt must be text, got {self.prompt!r}")
        if isinstance(self.resolved, list):   # its first form, names only: their values as they stand
            self.resolved = {path: getattr(owner, f.name) for path, owner, f in leaves(self) if path in self.resolved}
        if not isinstance(self.resolved, dict):
            raise SJCError(f"{where}: resolved must map field names to values, got {self.resolved!r}")
        for _, owner, f in leaves(self):
            value = getattr(owner, f.name)
            ftype = str(f.type)
            if value is None and "Optional" in ftype:
                continue
            base = next((k for k in ("bool", "int", "float", "str") if k in ftype), None)
            ok = base is None or (isinstance(value, kinds[base]) and not (base != "bool" and isinstance(value, bool)))
            if not ok:
                raise SJCError(f"{where}: {flag_name(f.name)[2:]} must be {base}, got {value!r}")
            if base == "float" and not math.isfinite(value):
                raise SJCError(f"{where}: {flag_name(f.name)} must be a finite number, got {value!r}")
        return self

    def unset_fields(self) -> set[str]:
        """The fields left as None ("the prior's default" or "derived"), as section.name."""
        return {path for path, owner, f in leaves(self) if getattr(owner, f.name) is None}

    def record_resolved(self, unset: set[str]) -> None:
        """Note in `resolved` the values filled in since `unset` (unset_fields()) was taken."""
        self.resolved.update({path: getattr(owner, f.name) for path, owner, f in leaves(self)
                              if path in unset and getattr(owner, f.name) is not None})

    def forget_resolved(self, given: set[str]) -> "RunConfig":
        """For a new run from this config with the fields `given` set anew: unset the filled-in values that depend
        on one of them (another prior's defaults, another --steps' emptiness schedule), so the run derives them
        from its own settings. A value given now, or edited by hand since it was filled in, is the user's: kept."""
        for path, owner, f in leaves(self):
            if path not in self.resolved:
                continue
            if path in given or getattr(owner, f.name) != self.resolved[path]:
                del self.resolved[path]
            elif DERIVED_FROM.get(path, FROM_THE_PRIOR) & given:
                setattr(owner, f.name, None)
                del self.resolved[path]
        return self

    def validate(self) -> "RunConfig":
        """Reject bad values with one actionable line each."""
        self.check_types()
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise SJCError("the prompt is empty: give a text prompt, e.g. sjc generate \"a blue sphere\"")
        checks = [
            (self.field.grid_size, "--grid-size"), (self.optim.steps, "--steps"),
            (self.render.resolution, "--resolution"), (self.guidance.num_noise, "--num-noise"),
            (self.guidance.polish_num_noise, "--polish-num-noise"),
            (self.output.ckpt_every, "--ckpt-every"), (self.output.preview_every, "--preview-every"),
            (self.camera.video_frames, "--video-frames"), (self.render.occupancy_every, "--occupancy-every"),
        ]
        for value, flag in checks:
            if value is not None and value <= 0:
                raise SJCError(f"{flag} must be a positive integer, got {value}")
        if self.field.grid_size is not None and self.field.grid_size < 2:
            raise SJCError(f"--grid-size must be at least 2, got {self.field.grid_size}")
        if self.render.renderer not in RENDERER_NAMES:
            raise SJCError(f"unknown --renderer {self.render.renderer!r}; choose one of {', '.join(RENDERER_NAMES)}")
        if not 0.05 <= self.render.step_ratio <= 4:
            raise SJCError(f"--step-ratio must lie in [0.05, 4] (sample spacing in voxels), got {self.render.step_ratio}")
        if self.render.weight_threshold < 0 or self.render.far_depth <= 0 or self.reg.emptiness_scale < 0:
            raise SJCError("need --weight-threshold >= 0, --far-depth > 0 and --emptiness-scale >= 0")
        if self.render.occupancy_threshold < 0:
            raise SJCError(f"--occupancy-threshold must be >= 0, got {self.render.occupancy_threshold}")
        if not 0 < self.camera.test_fov < 180:
            raise SJCError(f"need 0 < --test-fov < 180 (degrees), got {self.camera.test_fov}")
        if self.camera.radius <= 0 or self.camera.elev_min > self.camera.elev_max:
            raise SJCError(f"need --radius > 0 and --elev-min <= --elev-max, got {self.camera.radius}, "
                           f"{self.camera.elev_min}, {self.camera.elev_max}")
        if not 0 <= self.optim.seed < 2 ** 62:   # the RNG streams use seed, seed + 1 and seed + 2
            raise SJCError(f"--seed must be in [0, 2^62), got {self.optim.seed}")
        if self.guidance.method not in GUIDANCE_METHODS:
            raise SJCError(f"unknown --method {self.guidance.method!r}; choose one of {', '.join(GUIDANCE_METHODS)}")
        if self.optim.lr <= 0 or self.optim.bg_lr < 0:
            raise SJCError("--lr must be positive and --bg-lr non-negative")
        lo, hi = self.guidance.sigma_min, self.guidance.sigma_max
        if (lo is not None and lo <= 0) or (lo is not None and hi is not None and hi <= lo):
            raise SJCError(f"need 0 < --sigma-min < --sigma-max, got {lo} and {hi}")
        if self.optim.polish_steps is not None and self.optim.polish_steps < 0:
            raise SJCError(f"--polish-steps must be 0 or more, got {self.optim.polish_steps}")
        for flag, scale in (("--guidance-scale", self.guidance.guidance_scale),
                            ("--polish-guidance-scale", self.guidance.polish_guidance_scale)):
            if scale is not None and scale < 0:
                raise SJCError(f"{flag} must be 0 or more (1: no guidance), got {scale}")
        plo, phi = self.guidance.polish_sigma_min, self.guidance.polish_sigma_max
        if not 0 < plo < phi:
            raise SJCError(f"need 0 < --polish-sigma-min < --polish-sigma-max, got {plo} and {phi}")
        if self.guidance.view_scheme is not None and self.guidance.view_scheme not in VIEW_SCHEMES:
            raise SJCError(f"unknown --view-scheme {self.guidance.view_scheme!r}; choose one of {', '.join(VIEW_SCHEMES)}")
        fmin, fmax = self.camera.fov_min, self.camera.fov_max
        if (fmin is not None and not 0 < fmin < 180) or (fmax is not None and not 0 < fmax < 180) or \
                (fmin is not None and fmax is not None and fmin > fmax):
            raise SJCError(f"need 0 < --fov-min <= --fov-max < 180 (degrees), got {fmin} and {fmax}")
        return self


# What a filled-in value depends on (forget_resolved): the prior's defaults depend on the prior, and a few
# values are derived from other fields as well.
FROM_THE_PRIOR = frozenset({"prior", "model.model", "model.model_config"})
DERIVED_FROM = {
    "prior": frozenset({"model.model", "model.model_config"}),   # detected from --model
    "reg.emptiness_mult_step": FROM_THE_PRIOR | {"optim.steps", "reg.emptiness_mult_after"},
    # one end of the σ range given alone takes the other from the whole table, not the prior's narrower draw
    "guidance.sigma_min": FROM_THE_PRIOR | {"guidance.sigma_max"},
    "guidance.sigma_max": FROM_THE_PRIOR | {"guidance.sigma_min"},
    "guidance.polish_guidance_scale": FROM_THE_PRIOR | {"guidance.guidance_scale"},
    "guidance.polish_num_noise": FROM_THE_PRIOR | {"guidance.num_noise"},
}

GUIDANCE_METHODS = ("paas", "paas-plain", "naive", "sds", "oracle")
RENDERER_NAMES = ("fast", "fused", "packed", "dense")


def resolve_defaults(cfg: RunConfig, defaults: dict[str, Any]) -> RunConfig:
    """Fill every field left as None from a prior's defaults (by field name); the result is what config.json records."""
    for _, owner, f in leaves(cfg):
        if getattr(owner, f.name) is None and f.name in defaults:
            setattr(owner, f.name, defaults[f.name])
    return cfg


def flag_name(name: str) -> str:
    """A config field's command-line flag: grid_size → --grid-size."""
    return "--" + name.replace("_", "-")


def leaves(cfg: RunConfig):
    """Yield (path, the object that holds it, field) for every leaf config field (every one with a flag); path is
    'guidance.sigma_min', or 'prior' at the top level."""
    for f in fields(cfg):
        if f.name in RunConfig.SECTIONS:
            section = getattr(cfg, f.name)
            for g in fields(section):
                yield f"{f.name}.{g.name}", section, g
        elif f.name not in ("prompt", "resolved"):
            yield f.name, cfg, f


def field_comments(cls: Optional[type] = None) -> dict[str, str]:
    """The trailing comment of each dataclass field in a config's source (this file's, or cls's alone), used
    as its flag's help text."""
    import inspect
    import re
    import sys

    src = inspect.getsource(cls if cls is not None else sys.modules[__name__])
    return {m.group(1): m.group(2) for m in re.finditer(r"^    (\w+): [^#\n]+#\s*(.+)$", src, re.M)}


def add_config_flags(parser, defaults: Optional[RunConfig] = None, exclude: tuple[str, ...] = (),
                     only: Optional[tuple[str, ...]] = None) -> None:
    """Add one flag per config field (but those named in `exclude`; only those in `only` where given); the
    default None means 'not given on the command line'."""
    defaults = defaults or RunConfig()
    comments = field_comments()
    for path, owner, f in leaves(defaults):
        if f.name in exclude or (only is not None and f.name not in only):
            continue
        section = path.rpartition(".")[0]
        default = getattr(owner, f.name)
        ftype = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        help_ = f"{comments.get(f.name, f.name.replace('_', ' '))} [{section or 'run'}; default: {default}]"
        if "bool" in ftype:
            parser.add_argument(flag_name(f.name), dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                                help=help_)
        else:
            conv = int if "int" in ftype else float if "float" in ftype else str
            parser.add_argument(flag_name(f.name), dest=f.name, type=conv, default=None, help=help_)


def apply_overrides(cfg: RunConfig, ns) -> set[str]:
    """Copy the flags that were given on the command line into cfg; return their fields (section.name)."""
    given = set()
    for path, owner, f in leaves(cfg):
        value = getattr(ns, f.name, None)
        if value is not None:
            setattr(owner, f.name, value)
            given.add(path)
    return given
