"""Checkpoints: field, optimiser and RNG state in one safetensors file, written atomically, resumed exactly."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .atomic import atomic_path
from .errors import SJCError

FORMAT = "sjc-checkpoint-1"
CHECKPOINT_NAME = "checkpoint.safetensors"


def checkpoint_path(run_dir: Path) -> Path:
    """Where a run folder keeps its checkpoint."""
    return Path(run_dir) / CHECKPOINT_NAME


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def save_checkpoint(path: Path, field, optimizer: torch.optim.Optimizer, step: int,
                    generators: dict[str, torch.Generator], **info: str) -> None:
    """Everything needed to continue from `step` (bit-for-bit on CPU; CUDA's grid_sample backward is not
    deterministic); `info` goes into the metadata as text (e.g. renderer="fused")."""
    tensors = {f"field.{k}": v for k, v in field.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value)
    for name, gen in generators.items():
        tensors[f"rng.{name}"] = gen.get_state()
    meta = {**info, "format": FORMAT, "step": str(step), "param_groups": json.dumps(opt["param_groups"])}
    atomic_save_tensors(tensors, path, meta)


def checkpoint_metadata(path: Path) -> dict[str, str]:
    """A checkpoint's metadata (no tensors are read)."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint was written at."""
    return int(checkpoint_metadata(path)["step"])


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint; SJCError if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise SJCError(f"no checkpoint at {path}: this folder holds no run to resume (start one with sjc generate)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SJCError(f"the checkpoint {path} is corrupt ({str(e).splitlines()[0][:80]}); delete it to start the run over") from None
    if meta.get("format") != FORMAT:
        raise SJCError(f"{path} is not an sjc checkpoint (format {meta.get('format')!r})")
    return tensors, meta


def load_checkpoint(path: Path, field, optimizer: Optional[torch.optim.Optimizer] = None,
                    generators: Optional[dict[str, torch.Generator]] = None) -> int:
    """Restore field, optimiser and RNG state in place (those given); return the step to continue from."""
    tensors, meta = read_checkpoint(path)
    try:
        fstate = {k[6:]: v for k, v in tensors.items() if k.startswith("field.")}
        fstate.setdefault("occupancy", torch.ones_like(field.occupancy))   # checkpoints from before the fast renderer
        field.load_state_dict(fstate)
        if optimizer is not None:
            state: dict[int, dict] = {}
            for k, v in tensors.items():
                if k.startswith("optim."):
                    _, idx, key = k.split(".", 2)
                    state.setdefault(int(idx), {})[key] = v
            optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        for name, gen in (generators or {}).items():
            if tensors[f"rng.{name}"].numel() != gen.get_state().numel():   # a CUDA generator's state is 16 bytes
                raise SJCError(f"the checkpoint {path} holds the random streams of a run on another kind of device "
                               f"(a GPU run on a CPU, or the reverse): resume it on the kind it was trained on (a "
                               f"CPU run on a GPU machine with CUDA_VISIBLE_DEVICES= set); render and export work anywhere")
            gen.set_state(tensors[f"rng.{name}"])
        return int(meta["step"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise SJCError(f"the checkpoint {path} does not match its run config ({str(e).splitlines()[0][:80]})") from None
