"""Run folders: where a run's files live, which of them a run writes, and `RunFolder`, which holds a folder for
one writer from before its model loads until the run is finalised."""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Optional

from .atomic import folder_lock, remove_stale_temporaries
from .checkpoint import checkpoint_path, checkpoint_step
from .config import RunConfig
from .errors import SJCError, interrupt_behind

CONFIG_NAME = "config.json"
RUN_WRITER = "sjc generate or resume"   # what holds a run folder while it trains


def slugify(prompt: str) -> str:
    """A folder name for a prompt: 'A blue sphere!' → 'a-blue-sphere', 'café crème' → 'cafe-creme'; a prompt with
    no Latin letters or digits gets 'run-' and a hash of it, so different prompts never share a folder."""
    ascii_ = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_).strip("-")[:80].rstrip("-")
    return slug or "run-" + hashlib.sha256(prompt.encode()).hexdigest()[:8]


def out_dir_for(cfg: RunConfig) -> Path:
    """The run folder: --out-dir, or outputs/<prompt-slug>."""
    return Path(cfg.output.out_dir) if cfg.output.out_dir else Path("outputs") / slugify(cfg.prompt)


def prepare_out_dir(path: Path, flag: Optional[str] = "--out-dir") -> Path:
    """Create an output folder and prove it is writable, or fail with one actionable line (naming `flag`, the
    option that chooses the folder; None where none does)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)   # only sjc's own temporary names
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        fix = f"choose another with {flag}" if flag else "make it writable"
        raise SJCError(f"cannot write to the output folder {path}: {e.strerror or e}; {fix}") from None
    return path


# The files a run writes, by exact name (a user's mesh.blend or previews/step_final.png is not one of them).
OUTPUT_NAMES = re.compile(r"checkpoint\.safetensors|metrics\.json|(views|depth|opacity)\.png"
                          r"|turntable(_subpixel\d+)?\.mp4|mesh\.(glb|ply|obj)|previews/step_\d{6}\.png")


def run_outputs(path: Path) -> list[Path]:
    """The files in a folder that a run writes (OUTPUT_NAMES)."""
    files = [*path.glob("*"), *path.glob("previews/*")]
    return sorted(f for f in files if f.is_file() and OUTPUT_NAMES.fullmatch(f.relative_to(path).as_posix()))


def files_a_run_would_replace(path: Path) -> list[str]:
    """Files in a folder without a checkpoint that a new run would write over: its output names, and a config.json
    that is not an sjc run's (one left by a run interrupted before its first checkpoint is simply replaced)."""
    names = [f.relative_to(path).as_posix() for f in run_outputs(path)]
    if (path / CONFIG_NAME).exists():
        try:
            RunConfig.load(path / CONFIG_NAME)
        except SJCError:
            names.insert(0, CONFIG_NAME)
    return names


def remove_outputs(path: Path) -> None:
    """Delete a previous run's outputs from its folder (for --overwrite), leaving anything else alone."""
    for f in run_outputs(path):
        f.unlink()


def replaces_a_run(out_dir: Path, overwrite: bool) -> bool:
    """Whether generating into out_dir replaces an sjc run (allowed with --overwrite); fails with one line where
    it would replace a run unasked, or files that are not a run's."""
    is_run = checkpoint_path(out_dir).exists()
    if is_run and not overwrite:
        raise SJCError(f"{out_dir} already holds a run: continue it with 'sjc resume {out_dir}', "
                       f"or pass --overwrite or another --out-dir")
    clash = [] if is_run or overwrite else files_a_run_would_replace(out_dir)
    if clash:
        raise SJCError(f"{out_dir} is not a run folder but holds files a run writes ({', '.join(clash[:3])}"
                       f"{', …' if len(clash) > 3 else ''}): choose another --out-dir, or pass --overwrite to replace them")
    return is_run


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with what to do next (resume it, or start again if no checkpoint was written yet)."""

    def __init__(self, hint: str):
        super().__init__()
        self.hint = hint


class RunFolder:
    """A folder held by one writer (`with RunFolder(path) as folder:`) for a whole run, training and finalising.

    On entry it takes the folder's lock (.sjc-lock) if the folder already holds a run, so a second writer is
    refused before it loads a model; `create()` makes the folder, proves it writable and takes the lock if not
    yet held. Inside, Ctrl-C becomes one line saying what was kept and how to go on, and (once created) a failed
    write to a read-only or full disk one line naming the checkpoint that is kept. On exit the lock is released.

    checkpoint, step_of, resume and what describe the writer: for an SJC run its checkpoint.safetensors, read
    for its step, and 'sjc resume DIR'; `sjc prior train` names its own.
    """

    def __init__(self, path: Path, writer: str = RUN_WRITER, checkpoint: Optional[Path] = None,
                 step_of: Optional[Callable[[Path], int]] = checkpoint_step, resume: Optional[str] = None,
                 what: str = "the run"):
        self.path = Path(path)
        self.writer, self.what, self.step_of = writer, what, step_of
        self.checkpoint = checkpoint or checkpoint_path(self.path)
        self.resume = resume or f"'sjc resume {self.path}'"
        self.held = self.writing = False
        self._stack = ExitStack()

    def __enter__(self) -> "RunFolder":
        if (self.path / CONFIG_NAME).is_file():
            self.hold()
        return self

    def hold(self) -> None:
        """Take the folder's lock (one line if another writer holds it)."""
        if not self.held:
            self._stack.enter_context(folder_lock(self.path, self.writer))
            self.held = True

    def create(self, flag: Optional[str] = "--out-dir") -> bool:
        """Make the folder, prove it writable (one line naming `flag` if not) and hold it; return whether the lock
        was taken only now (so checks made before may need asking again)."""
        prepare_out_dir(self.path, flag)
        newly = not self.held
        self.hold()
        self.writing = True
        return newly

    def __exit__(self, kind, error, tb) -> bool:
        from safetensors import SafetensorError

        try:
            if error is None:
                return False
            if isinstance(error, KeyboardInterrupt) or interrupt_behind(error):
                raise RunInterrupted(self._interrupt_hint()) from None
            if self.writing and isinstance(error, (OSError, SafetensorError)):
                what = (f"{error.strerror}: {error.filename}" if isinstance(error, OSError) and error.strerror
                        else str(error).splitlines()[0][:200])
                raise SJCError(f"writing {self.what} in {self.path} failed ({what}); {self._kept()}") from None
            return False
        finally:
            self._stack.close()

    def _interrupt_hint(self) -> str:
        if self.checkpoint.exists():
            return f"the last checkpoint is kept, continue with {self.resume}"
        return "no checkpoint had been written yet, so there is nothing to resume: run the command again"

    def _kept(self) -> str:
        if not self.checkpoint.exists():
            return "no checkpoint was written"
        step = f" of step {self.step_of(self.checkpoint)}" if self.step_of else ""
        return f"the checkpoint{step} is kept; fix the disk, then {self.resume}"
