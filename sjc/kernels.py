"""The C++ kernels (sjc/csrc: the fused renderer's volrend.cpp and the optimiser's adamax.cpp), built for this
CPU on first use with torch's C++ extension loader and cached; where they cannot be built (no compiler),
`available()` is False and sjc runs on its PyTorch code alone.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


_EXT = None
_FAILED = False


def _libmvec() -> bool:
    """glibc's vector maths library with the float exp and log1p variants (x86-64 Linux, glibc >= 2.35)."""
    import platform
    lib, version = platform.libc_ver()
    try:
        return (platform.system() == "Linux" and platform.machine() == "x86_64" and lib == "glibc"
                and tuple(int(v) for v in version.split(".")[:2]) >= (2, 35))
    except ValueError:
        return False


def _short_hash(text: str, n: int) -> str:
    """The first n hex digits of the SHA-1 of text (names a build)."""
    import hashlib
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def _cpu_signature() -> str:
    """A short hash of this CPU's model and instruction-set flags (names a build made for it)."""
    import platform
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            text += "".join(sorted({line for line in f if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        text += platform.processor()
    return _short_hash(text, 10)


def build_attempts(csrc: Path) -> list[tuple[str, list[str], list[str]]]:
    """(module name, extra cflags, extra ldflags) to try in order; the names are unique to this CPU and this checkout.

    First for this CPU's instruction set (AVX2/AVX-512 where present) with the vector maths library where it
    should exist, then without that library, then a portable build. The names carry the CPU's signature, so a
    shared build cache never hands a build to another CPU, and a hash of the source folder, so two checkouts
    (a clone next to an install) do not rebuild over each other's build whenever they take turns.
    """
    src = _short_hash(str(csrc.resolve()), 8)
    native = [] if os.environ.get("SJC_PORTABLE_BUILD") else [f"sjc_volrend_native_{_cpu_signature()}_{src}"]
    attempts = [(name + "_mvec", ["-march=native", "-DSJC_LIBMVEC"], ["-lmvec"]) for name in native if _libmvec()]
    return attempts + [(name, ["-march=native"], []) for name in native] + [(f"sjc_volrend_{src}", [], [])]


def wait_for_build_lock(lock: Path, stale_after: float = 600.0, poll: float = 0.5, tell_after: float = 5.0) -> None:
    """Wait while another process builds the kernels; remove their lock once older than any build (a killed build's)."""
    told, t0 = False, time.monotonic()
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > stale_after:
            lock.unlink(missing_ok=True)
            print(f"sjc: removed {lock}, left {age / 60:.0f} min ago by a build that was killed")
            return
        if not told and time.monotonic() - t0 >= tell_after:
            print(f"sjc: waiting for another process to finish building the fused CPU renderer (lock {lock}; "
                  f"delete it if no other sjc process is running)", flush=True)
            told = True
        time.sleep(poll)


def extension():
    """The compiled kernel module, building it on first use; None where that fails (reported once)."""
    global _EXT, _FAILED
    if _EXT is None and not _FAILED:
        csrc = Path(__file__).resolve().parent / "csrc"
        sources = [str(csrc / "volrend.cpp"), str(csrc / "adamax.cpp")]
        os.environ.setdefault("MAX_JOBS", "2")
        cflags, ldflags = ["-O3", "-fno-math-errno", "-fopenmp"], ["-fopenmp"]
        error, told = None, False
        for name, cf, lf in build_attempts(csrc):
            try:   # no compiler, no ninja, no setuptools, …: the pure-PyTorch renderer still works
                from torch.utils.cpp_extension import _get_build_directory, load
                build_dir = Path(_get_build_directory(name, False))
                # torch waits forever on a lock left by a killed build (SIGTERM/SIGKILL skip its cleanup)
                wait_for_build_lock(build_dir / "lock")
                if not told and sys.stderr.isatty() and needs_build(build_dir, name, sources):   # why the run pauses
                    print("sjc: building the fused CPU renderer for this CPU (first use only, 1-2 minutes)...",
                          file=sys.stderr, flush=True)
                    told = True
                _EXT = load(name, sources, extra_cflags=cflags + cf, extra_ldflags=ldflags + lf, verbose=False)
                break
            except Exception as e:
                error = e
        if _EXT is None:
            _FAILED = True
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:120]
            print(f"sjc: warning: the fused CPU renderer could not be built ({reason}); using the PyTorch renderer")
    return _EXT


def needs_build(build_dir: Path, name: str, sources: list[str]) -> bool:
    """Whether a build named `name` is missing or older than its sources (so loading it compiles first)."""
    built = [build_dir / f"{name}{ext}" for ext in (".so", ".pyd") if (build_dir / f"{name}{ext}").exists()]
    return not built or max(os.path.getmtime(f) for f in sources) > built[0].stat().st_mtime


def available() -> bool:
    """Whether the fused CPU kernels are built (or can be built) for this machine."""
    return extension() is not None
