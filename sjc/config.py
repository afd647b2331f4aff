"""The run configuration: one settings dataclass per concept, every field a flag, written as config.json.

A field declared `prior=True` is left to the run's prior where unset (None): `build.resolve_for_prior` fills it
from the prior's defaults, or derives it (`derived_from` names what from), and records what it filled in
`RunConfig.resolved`, so a config.json holds the complete resolved config and still knows which values were
the user's. A new run from that config derives again only what depends on a setting given anew
(`forget_resolved`): another --prior brings its own defaults, another --steps its own emptiness schedule.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

from .cameras import VIEW_SCHEMES
from .errors import SJCError
from .settings import check, field_type, leaves, setting

GUIDANCE_METHODS = ("paas", "paas-plain", "naive", "sds", "oracle")
RENDERER_NAMES = ("fast", "fused", "packed", "dense")
# What a prior's defaults depend on: the prior itself, named or detected from its weights.
THE_PRIOR = ("prior", "model.model", "model.model_config")


def from_prior(help: str, *, derived_from=(), derived: bool = False, **bounds):
    """A setting left to the run's prior where unset (None): taken from its defaults, or (derived) worked out
    from other settings or from the prior itself."""
    return setting(None, help, prior=True, derived=derived or bool(derived_from),
                   derived_from=THE_PRIOR + tuple(derived_from), **bounds)


@dataclasses.dataclass
class FieldConfig:
    """The voxel radiance field."""
    grid_size: Optional[int] = from_prior("voxels per side of the box [-1, 1]^3", min=2)
    density_shift: float = setting(-1.0, "density = softplus(raw * exp(d_scale) + shift)")


@dataclasses.dataclass
class RenderConfig:
    """The differentiable volume renderer."""
    resolution: Optional[int] = from_prior("rays per side of a rendered view (the prior's data size)", min=1)
    step_ratio: float = setting(0.5, "sample spacing in voxels (reference: half a voxel)", min=0.05, max=4)
    weight_threshold: float = setting(1e-4, "appearance is only looked up where w exceeds this", min=0)
    far_depth: float = setting(10.0, "depth assigned to the background", gt=0)
    renderer: str = setting("fast", "fast (fused C++ on CPU, else packed; dense on CUDA) | fused | packed | dense "
                                    "(the reference)", choices=RENDERER_NAMES)
    occupancy_threshold: float = setting(1e-3, "fast renderer: cells whose neighbourhood density stays below "
                                               "this are skipped", min=0)
    occupancy_every: int = setting(8, "fast renderer: refresh the occupancy grid every N steps", min=1)


@dataclasses.dataclass
class CameraConfig:
    """Training camera distribution (reference defaults)."""
    radius: float = setting(1.5, "camera distance from the origin", gt=0)
    elev_min: float = setting(-6.0, "lowest training elevation (degrees)", min=-90, max=90)
    elev_max: float = setting(90.0, "highest training elevation (degrees)", min=-90, max=90)
    fov_min: Optional[float] = from_prior("lower end of the training FoV range (degrees; reference: 40)", gt=0, lt=180)
    fov_max: Optional[float] = from_prior("upper end of the training FoV range (degrees; reference: 70)", gt=0, lt=180)
    test_fov: float = setting(60.0, "FoV of previews, video and evaluation views (degrees)", gt=0, lt=180)
    video_frames: int = setting(100, "frames of the spiral turntable video", min=1)

    def relations(self):
        return [(self.elev_min <= self.elev_max, f"need --elev-min <= --elev-max, got {self.elev_min} and "
                                                 f"{self.elev_max}"),
                (None in (self.fov_min, self.fov_max) or self.fov_min <= self.fov_max,
                 f"need 0 < --fov-min <= --fov-max < 180 (degrees), got {self.fov_min} and {self.fov_max}")]


@dataclasses.dataclass
class GuidanceConfig:
    """How the 2D prior's score becomes an image-space gradient."""
    method: str = setting("paas", "guidance", choices=GUIDANCE_METHODS)
    num_noise: int = setting(1, "K noise samples averaged per step", min=1)
    # One end of the σ range given alone takes the other end from the prior's whole table.
    sigma_min: Optional[float] = from_prior("lower end of the σ draw", derived_from=("guidance.sigma_max",), gt=0)
    sigma_max: Optional[float] = from_prior("upper end of the σ draw", derived_from=("guidance.sigma_min",), gt=0)
    guidance_scale: Optional[float] = from_prior("classifier-free guidance scale of the SJC steps (1: none)", min=0)
    view_prompts: bool = setting(True, 'prefix "front view of" etc. by camera')
    view_scheme: Optional[str] = from_prior("view prompts: reference (4 views) | fine (45° sectors) | fine-bands "
                                            "(+ elevation words); unset: the prior's own", choices=tuple(VIEW_SCHEMES),
                                            derived=True)
    polish_sigma_min: float = setting(0.05, "lower end of the appearance polish's σ range (data units)", gt=0)
    polish_sigma_max: float = setting(0.5, "upper end of the polish's σ range (data units)", gt=0)
    polish_guidance_scale: Optional[float] = from_prior("guidance scale of the polish (unset: the prior's, else "
                                                        "--guidance-scale)", derived_from=("guidance.guidance_scale",),
                                                        min=0)
    polish_num_noise: Optional[int] = from_prior("noise samples averaged per polish step (unset: the prior's, else "
                                                 "--num-noise)", derived_from=("guidance.num_noise",), min=1)

    def relations(self):
        lo, hi = self.sigma_min, self.sigma_max
        return [(None in (lo, hi) or lo < hi, f"need 0 < --sigma-min < --sigma-max, got {lo} and {hi}"),
                (self.polish_sigma_min < self.polish_sigma_max, f"need 0 < --polish-sigma-min < --polish-sigma-max, "
                                                                f"got {self.polish_sigma_min} and {self.polish_sigma_max}")]

    def polish_follows_sjc(self) -> None:
        """Fill the polish's unset guidance scale and noise count with the SJC steps' own."""
        if self.polish_guidance_scale is None:
            self.polish_guidance_scale = self.guidance_scale
        if self.polish_num_noise is None:
            self.polish_num_noise = self.num_noise


@dataclasses.dataclass
class RegConfig:
    """Regularisers."""
    emptiness_weight: Optional[float] = from_prior("weight λ of the emptiness loss", min=0)
    emptiness_scale: float = setting(10.0, "s in log(1 + s·w)", min=0)
    emptiness_mult: float = setting(20.0, "emptiness weight multiplier late in the run", min=0)
    emptiness_mult_after: float = setting(0.5, "fraction of the steps after which the multiplier applies", min=0, max=1)
    emptiness_mult_step: Optional[int] = from_prior("the step the multiplier starts (unset: mult_after × steps, fixed "
                                                    "at creation)", derived_from=("optim.steps",
                                                                                  "reg.emptiness_mult_after"), min=0)
    center_depth_weight: float = setting(0.0, "pull the object to the view centre (10–100 for some prompts)", min=0)


@dataclasses.dataclass
class OptimConfig:
    """Adamax with per-group learning rates (reference defaults)."""
    steps: Optional[int] = from_prior("optimisation (SJC) steps", min=1)
    polish_steps: Optional[int] = from_prior("appearance-only steps after them, at small σ", min=0)
    lr: float = setting(0.05, "Adamax learning rate of density, appearance and d_scale", gt=0)
    bg_lr: float = setting(1e-4, "Adamax learning rate of the background", min=0)
    # The RNG streams use seed, seed + 1 and seed + 2.
    seed: int = setting(0, "same seed and config → the same field (on CPU, with the same number of threads)",
                        min=0, lt=2 ** 62)


@dataclasses.dataclass
class OutputConfig:
    """What a run writes and how often."""
    out_dir: Optional[str] = setting(None, "run folder (unset: outputs/<prompt-slug>)")
    ckpt_every: int = setting(200, "checkpoint interval (steps)", min=1)
    preview_every: int = setting(250, "preview image interval (steps)", min=1)
    video: bool = setting(True, "write the turntable video (--no-video to skip)")
    mesh: bool = setting(True, "write GLB and PLY meshes (--no-mesh to skip)")
    overwrite: bool = setting(False, "replace a run already in out_dir")
    device: str = setting("auto", "auto (cuda when available, else cpu), cpu, cuda or cuda:N")


@dataclasses.dataclass
class ModelConfig:
    """Pretrained weights and how they run (each prior reads the flags its registration names)."""
    model: Optional[str] = setting(None, "diffusers folder, cached Hub id, or single .safetensors/.ckpt file")
    model_config: Optional[str] = setting(None, "for a single file: the base model's diffusers folder or cached id")
    half: Optional[bool] = setting(None, "fp16 U-Net (unset: on CUDA for diffusers models; the toy prior stays fp32)")
    attention_slicing: bool = setting(False, "lower peak memory on small cards")
    offload: bool = setting(False, "keep the text encoder and VAE on the CPU, only the U-Net on the GPU")
    compile: Optional[bool] = setting(None, "torch.compile the U-Net with CUDA graphs (unset: on CUDA only)")
    channels_last: Optional[bool] = setting(None, "U-Net in the channels-last memory layout (unset: on the CPU only)")


@dataclasses.dataclass
class RunConfig:
    """Everything that defines a run; written as config.json beside its outputs."""
    prompt: str = setting("", "text prompt", cli=False)
    prior: Optional[str] = setting(None, "toy | closed-form | sd | unet2d (unset: the learned toy prior, or detected "
                                         "from --model)", prior=True, derived=True,
                                   derived_from=("model.model", "model.model_config"))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    guidance: GuidanceConfig = dataclasses.field(default_factory=GuidanceConfig)
    reg: RegConfig = dataclasses.field(default_factory=RegConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    # The values the run filled in itself (its prior's defaults, or derived from other fields), by section.name.
    resolved: dict[str, Any] = setting(factory=dict, cli=False)

    def relations(self):
        return [(not isinstance(self.prompt, str) or bool(self.prompt.strip()),
                 'the prompt is empty: give a text prompt, e.g. sjc generate "a blue sphere"')]

    def to_dict(self) -> dict:
        """Every field, nested by section, as plain JSON-able values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A config from to_dict()'s form (sections as nested dicts); unknown keys are errors."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            section = field_type(cls, f)
            if not dataclasses.is_dataclass(section):
                kw[f.name] = d[f.name]
                continue
            if not isinstance(d[f.name], dict):
                raise ValueError(f"{f.name} must be an object of settings, got {d[f.name]!r}")
            names = {g.name for g in dataclasses.fields(section)}
            if extra := set(d[f.name]) - names:
                raise ValueError(f"unknown keys in {f.name}: {sorted(extra)}")
            kw[f.name] = section(**d[f.name])
        if unknown := set(d) - {f.name for f in dataclasses.fields(cls)}:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
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
        except (OSError, ValueError, TypeError) as e:
            raise SJCError(f"cannot read run config {path}: {e}") from None
        return cfg.check_types(str(path))

    def check_types(self, where: str = "config") -> "RunConfig":
        """Every leaf holds a value of its declared type within its bounds (the prompt may still be empty)."""
        if self.prompt is None:   # "no prompt": the command's default, or its refusal, as for ""
            self.prompt = ""
        if not isinstance(self.prompt, str):
            raise SJCError(f"{where}: prompt must be text, got {self.prompt!r}")
        if isinstance(self.resolved, list):   # its first form, names only: their values as they stand
            self.resolved = {path: getattr(owner, f.name) for path, owner, f in leaves(self) if path in self.resolved}
        if not isinstance(self.resolved, dict):
            raise SJCError(f"{where}: resolved must map field names to values, got {self.resolved!r}")
        return check(self, where, bounds=False)

    def validate(self) -> "RunConfig":
        """Reject bad values with one actionable line each."""
        return check(self)

    def record_resolved(self, unset: set[str]) -> None:
        """Note in `resolved` the values filled in since `unset` (unset_fields()) was taken."""
        self.resolved.update({path: getattr(owner, f.name) for path, owner, f in leaves(self)
                              if path in unset and getattr(owner, f.name) is not None})

    def unset_fields(self) -> set[str]:
        """The settings left to the prior (None), as section.name."""
        return {path for path, owner, f in leaves(self) if f.metadata.get("prior") and getattr(owner, f.name) is None}

    def forget_resolved(self, given: set[str]) -> "RunConfig":
        """For a new run from this config with the settings `given` set anew: unset the filled-in values that depend
        on one of them (their `derived_from`), so the run derives them from its own settings. A value given now, or
        edited by hand since it was filled in, is the user's: kept."""
        for path, owner, f in leaves(self):
            if path not in self.resolved:
                continue
            if path in given or getattr(owner, f.name) != self.resolved[path]:
                del self.resolved[path]
            elif set(f.metadata.get("derived_from", ())) & given:
                setattr(owner, f.name, None)
                del self.resolved[path]
        return self


def fill_from(cfg: RunConfig, defaults: dict[str, Any]) -> RunConfig:
    """Fill every setting left as None from a prior's defaults (by field name)."""
    for _, owner, f in leaves(cfg):
        if getattr(owner, f.name) is None and f.name in defaults:
            setattr(owner, f.name, defaults[f.name])
    return cfg


if __name__ == "__main__":   # the settings reference of docs/configuration.md: python -m sjc.config
    from .settings import reference_table
    print(reference_table(RunConfig), end="")
