"""The C heap settings of rlm-graph's own processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
from rlm_graph.allocator import MMAP_THRESHOLD, return_freed_blocks

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "set":
    return_freed_blocks()
big = 4 * MMAP_THRESHOLD
libc.free(libc.malloc(big))  # glibc raises its threshold past this block, unless told not to
block = libc.malloc(big)
print(libc.mallinfo2().hblkhd >= big)  # served by mmap: given back to the kernel when freed
libc.free(block)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize(("mode", "mapped"), [("set", "True"), ("default", "False")])
def test_a_freed_big_block_does_not_move_later_ones_into_the_heap(mode: str, mapped: str) -> None:
    # A prompt of ~150,000 characters freed made glibc keep every later one in its heaps,
    # whose holes stayed resident: the host of a 100m-token oolong eval peaked 93 MB higher.
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    assert probe.stdout.strip() == mapped
