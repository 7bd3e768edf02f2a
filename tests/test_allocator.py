"""`pipeline.training.allocator`: with glibc's thresholds set, a step's large tensors stay in the process.

Real subprocesses (the setting is process-wide) read glibc's own accounting (`mallinfo2`) around a
20 MB tensor, the size of the Conformer quickstart's largest activations: with glibc's defaults it
gets its own `mmap`, which `free` unmaps (the next step page-faults it in again); with
`keep_freed_memory()` it comes from the heap, and the heap keeps it after it is freed.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest


def _has_mallinfo2() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_mallinfo2(), reason="glibc >= 2.33 (mallopt, mallinfo2) needed")

_PROBE = r"""
import ctypes, sys, torch
from pipeline.training.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory(), "mallopt refused the thresholds"
mb = 1 << 20
tensor = torch.ones(5 * mb)  # 20 MB
held = libc.mallinfo2()
del tensor
freed = libc.mallinfo2()
print(held.hblkhd // mb, held.arena // mb, freed.arena // mb)
"""


def _probe(mode: str) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    mapped, heap_held, heap_freed = (int(v) for v in out.stdout.split())
    return mapped, heap_held, heap_freed


def test_large_tensors_come_from_the_heap_and_stay() -> None:
    mapped, _, _ = _probe("default")
    assert mapped >= 20, "with glibc's defaults a 20 MB tensor is its own mmap"
    mapped, heap_held, heap_freed = _probe("keep")
    assert mapped < 20, "kept: the tensor comes from the heap"
    assert heap_held >= 20 and heap_freed >= 20, "and the heap is not trimmed when it is freed"
