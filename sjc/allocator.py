"""Host memory for the CPU hot loop: keep freed blocks in the heap so each step's buffers are not page-faulted in anew."""
from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters (malloc.h)
_DONE = False


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Ask glibc to serve blocks below `mmap_threshold` from the heap and to keep up to `trim_threshold` of
    freed memory, instead of mapping and unmapping them per allocation.

    A CPU step allocates tens of MB (sample records, gradient grids, optimiser temporaries) and frees them
    again; by default glibc returns such blocks to the kernel, so every step page-faults them back in
    (about 12,000 faults per step at the reference SD configuration). Process-wide and idempotent; returns
    whether it applied (False off glibc, e.g. on macOS or musl).
    """
    global _DONE
    if _DONE:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _DONE = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _DONE
