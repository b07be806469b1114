"""Resident memory on a node: give frame buffers back to the system when they are freed.

A 720p frame is 2.7 MB, and the node allocates a few per captured frame (the decoded picture, its RGB copy, the
downscaled one). glibc's malloc serves blocks that large with mmap at first, but its threshold is dynamic: after
the first such block is freed it rises to that size, and from then on frame buffers come from the heap and its
per-thread arenas, which keep the freed memory (about 10 MB more resident while streaming 720p, measured with
`argusnet bench node`). Fixing the threshold (which also turns the dynamic adjustment off) keeps every frame
buffer mmapped: freed means returned. The cost, the page faults of a fresh mapping, did not show in a loop making
two 720p buffers a frame (2.15 ms of CPU a frame either way). A C library without ``mallopt`` (or one that ignores
it) is left as it is."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
FRAME_MMAP_THRESHOLD = 256 * 1024  # blocks from 256 KiB up (frames, not the small objects Python allocates)


def return_freed_frames() -> bool:
    """Serve large blocks with mmap from now on, in this whole process; whether the C library took the setting."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: frame buffers stay with the allocator's defaults")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, FRAME_MMAP_THRESHOLD) == 1
