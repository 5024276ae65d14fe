"""C heap settings for the processes rlm-graph starts itself (`rlm`, the sandbox workers).

Only for processes rlm-graph owns: an application that embeds it keeps its allocator as
it set it.
"""

from __future__ import annotations

import ctypes

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
MMAP_THRESHOLD = 128 << 10  # glibc's own starting value


def return_freed_blocks() -> None:
    """Serve blocks of 128 KiB and more from the kernel, and give them back when freed.

    glibc does so from 128 KiB at first, then raises the threshold to the size of each
    such block freed (up to 32 MiB): once the first sub-call prompt (~150,000
    characters) was freed, every later prompt, request body and reply was carved out of
    the heaps of the arenas the call threads use, and the holes left between blocks
    still in use stayed resident. `rlm eval --offline --task oolong --size 100m`: the
    host's free but held heap (mallinfo2) 134 MB -> 31 MB, its peak RSS 415 -> 322 MB,
    the sandbox worker's PSS 341 -> 302 MB, the same wall time. A fixed threshold turns
    the raising off. A C library without ``mallopt`` (macOS) is left as it is.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
