"""Atomic file writes: a temporary file beside the target, fsync, rename; a kill never leaves half a file."""
from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".sjc-tmp"   # temporary names are ".<name>.sjc-tmp<writer's pid>-<random><suffix>"


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path` (same suffix); on success fsync it and move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, prefix=f".{path.name}{TMP_MARK}{os.getpid()}-",
                               dir=path.parent)
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


def writer_alive(name: str) -> bool:
    """Whether the process named in a temporary file's name is still running (so may still be writing it)."""
    m = re.search(re.escape(TMP_MARK) + r"(\d+)-", name)
    pid = int(m.group(1)) if m else 0   # no writer named: an older sjc's temporary
    if not 0 < pid < 2 ** 31:
        return False
    try:
        os.kill(pid, 0)   # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:   # it exists, as another user's
        pass
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files left by a process killed in the middle of an atomic write; a live writer's
    (another sjc writing into the same folder, e.g. `sjc export` during `sjc generate`) are left alone."""
    for tmp in Path(folder).glob(f".*{TMP_MARK}*"):
        if not writer_alive(tmp.name):
            tmp.unlink(missing_ok=True)


LOCK_NAME = ".sjc-lock"


@contextmanager
def folder_lock(folder: Path, what: str = "sjc process"):
    """Hold a folder for one writer: a second process that asks for it while this one runs fails with one line."""
    from filelock import FileLock, Timeout

    from .errors import SJCError

    lock = FileLock(Path(folder) / LOCK_NAME, mode=0o666)   # the umask decides, as for the run's files
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SJCError(f"{folder} is in use by another {what} that is still running: wait for it to end or stop "
                       f"it, or choose another folder") from None
    except OSError as e:   # a read-only folder, another user's lock file, a file system without locks
        raise SJCError(f"cannot lock {lock.lock_file} for writing: {e.strerror or e}; make the folder writable "
                       f"(and the lock file yours), or choose another folder") from None
    try:
        yield
    finally:
        lock.release()
