"""Handing freed memory back to the system between the stages of a long run."""

from __future__ import annotations

import ctypes
import gc


def release_freed_memory() -> None:
    """Collect garbage and return the C heap's free pages to the system (glibc only).

    Freed tensors below glibc's mmap threshold stay mapped in the heap; without this, what one stage
    or suite freed still counts towards the next one's peak resident memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
