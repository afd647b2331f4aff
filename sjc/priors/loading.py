"""Finding diffusers weights offline: a local folder, a Hub id in the local cache, or a single checkpoint file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from ..errors import SJCError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
HOW_TO_GET = ("download it where there is network (e.g. `hf download <id>`) and copy the folder "
              "or the Hugging Face cache here, then pass --model <folder, id or .safetensors>")


def offline() -> None:
    """Never touch the network: nothing may download weights at run time (and nothing may hang on it)."""
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                      HF_HUB_DISABLE_PROGRESS_BARS="1")
    import logging
    for name in ("transformers", "diffusers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import diffusers.utils.logging as dl
        import transformers.utils.logging as tl
        dl.disable_progress_bar()
        tl.disable_progress_bar()
        dl.set_verbosity_error()
        tl.set_verbosity_error()
    except Exception:   # progress bars are cosmetic
        pass


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache, found as huggingface_hub finds it (read at each call, not at import):
    $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
    ~/.cache/huggingface/hub."""
    env = os.environ.get
    home = env("HF_HOME") or str(Path(env("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    cache = env("HF_HUB_CACHE") or env("HUGGINGFACE_HUB_CACHE") or str(Path(home) / "hub")
    return Path(os.path.expandvars(cache)).expanduser()


def resolve_model(model: str) -> tuple[str, Path]:
    """Classify --model as ('folder' | 'file', path); a Hub id is looked up in the local cache only."""
    p = Path(model).expanduser()
    if p.is_file():
        if p.suffix not in SINGLE_FILE_SUFFIXES:
            raise SJCError(f"{p} is not a model checkpoint: expected a diffusers folder or a "
                           f"{'/'.join(SINGLE_FILE_SUFFIXES)} file")
        return "file", p
    if p.is_dir():
        if not (p / "model_index.json").is_file() and not (p / "config.json").is_file():
            raise SJCError(f"{p} is not a diffusers model folder (no model_index.json or config.json); {HOW_TO_GET}")
        return "folder", p
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        repo = hub_cache_dir() / ("models--" + model.replace("/", "--"))
        snaps = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if repo.is_dir() else []
        ref = repo / "refs" / "main"
        if ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir():
            return "folder", repo / "snapshots" / ref.read_text().strip()
        if snaps:
            return "folder", snaps[-1]
        raise SJCError(f"model {model!r} is not in the local Hugging Face cache ({hub_cache_dir()}) and "
                       f"sjc never downloads; {HOW_TO_GET}")
    raise SJCError(f"no model at {model!r}: not a folder, a checkpoint file or a cached Hub id; {HOW_TO_GET}")


def weights_variant(folder: Path) -> Optional[str]:
    """'fp16' where a model folder holds only fp16-variant weights (name.fp16.safetensors), else None (the plain ones)."""
    files = [f.name for f in folder.glob("*") if f.suffix in (".safetensors", ".bin")]
    if files and all(".fp16." in name for name in files):
        return "fp16"
    return None


def _class_name(path: Path) -> Optional[str]:
    """The "_class_name" of a diffusers JSON file (None if the file is absent); SJCError if it is damaged."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SJCError(f"{path} is not a diffusers JSON object: the model folder is damaged; {HOW_TO_GET}")
    return data.get("_class_name")


def pipeline_class(folder: Path) -> Optional[str]:
    """The pipeline class named in a diffusers folder's model_index.json (None for a bare model folder)."""
    return _class_name(folder / "model_index.json")


def model_class(folder: Path) -> Optional[str]:
    """The model class named in a bare model folder's config.json (None without one)."""
    return _class_name(folder / "config.json")


def load_failed(model: str, err: Exception) -> SJCError:
    """One line for any failure inside diffusers/transformers while loading weights."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return SJCError(f"could not load the model at {model}: {msg[:200]}; check the files are complete, or {HOW_TO_GET}")
