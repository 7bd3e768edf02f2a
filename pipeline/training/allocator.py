"""Keep the memory a training step frees for the next step, instead of handing it back to the OS (glibc).

A CPU training step allocates and frees the same large activations every time (the quickstart
Conformer's subsampling alone makes 14 MB tensors). glibc's malloc returns large freed blocks to
the kernel (`munmap`, or trimming the heap top), so the next step touches fresh pages and page-faults
on every 4 KiB of them: about 8000 faults per quickstart step, at ~2.3 µs of CPU each on this
project's 2-vCPU VM. With the thresholds below the same step takes about 50 faults, and 7-8% less time
(`train.keep_freed_memory`; measurements in README.md, Performance).

The cost is memory: the process keeps its peak heap (up to `trim_bytes` of it free) until it exits,
as PyTorch's own GPU caching allocator does. Not glibc (macOS, Windows, musl): nothing happens.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h>


def keep_freed_memory(trim_bytes: int = 1 << 30, top_pad_bytes: int = 64 << 20, mmap_bytes: int = 32 << 20) -> bool:
    """Set glibc's malloc thresholds for this process; True when they took effect.

    - allocations up to `mmap_bytes` (32 MiB, glibc's maximum) come from the heap, not from their own
      `mmap` that `free` would unmap;
    - the heap top is trimmed only when more than `trim_bytes` of it are free;
    - the heap grows (and, when trimmed, keeps) `top_pad_bytes` beyond what was asked.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(option, value) == 1 for option, value in
             ((M_MMAP_THRESHOLD, mmap_bytes), (M_TRIM_THRESHOLD, trim_bytes), (M_TOP_PAD, top_pad_bytes)))
    if not ok:
        logger.info("malloc thresholds not set (not glibc?): freed memory goes back to the OS as usual")
    return ok
