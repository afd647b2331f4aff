"""Atomic file writes: a temporary file beside the target, fsync, rename; a kill never leaves half a file."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".sjc-tmp"   # temporary names are ".<name>.sjc-tmp<random><suffix>"


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path` (same suffix); on success fsync it and move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        mask = os.umask(0o22)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)   # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text: str) -> Path:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files left by a process killed in the middle of an atomic write."""
    for stale in Path(folder).glob(f".*{TMP_MARK}*"):
        stale.unlink()
