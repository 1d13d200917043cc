"""The C allocator's settings during a build: reuse freed memory instead of fresh pages.

A build allocates and frees large numpy arrays (tens of MB) by the thousand. With glibc's
defaults each of them is a fresh ``mmap``: the kernel zeroes its pages (transparent huge
pages included) on first touch and unmaps them on free, and two worker threads then queue on
the process's page-fault lock. On the 50 M-record benchmark that was about a quarter of all
CPU time spent in the kernel. During a build flowatlas therefore asks glibc (``mallopt``) to
serve blocks up to 32 MiB from its heaps, to keep freed memory for the next task and to grow
its heaps in 256 MiB steps; afterwards it returns the free memory to the system
(``malloc_trim``) and sets moderate values again (a 64 MiB trim threshold, 128 KiB of top
pad; the 32 MiB mmap threshold stays, the ceiling glibc's own dynamic threshold reaches
anyway). The results do not change, only where memory comes from. Other C libraries (musl,
macOS) are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit)
BUILD_TRIM_THRESHOLD = 1 << 31
BUILD_TOP_PAD = 256 << 20
AFTER_TRIM_THRESHOLD = 64 << 20
AFTER_TOP_PAD = 128 << 10
#: glibc's library on Linux, opened by this name first: ``ctypes.util.find_library("c")``
#: runs ``ldconfig -p`` in a child process (7 ms of wall before a build's first map task)
GLIBC_SONAME = "libc.so.6"


def _open_libc() -> ctypes.CDLL:
    """The C library: glibc's by its name, else whatever ``find_library`` names (musl's)."""
    try:
        return ctypes.CDLL(GLIBC_SONAME)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c") or GLIBC_SONAME)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = _open_libc()
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def _set(libc: ctypes.CDLL, trim: int, top_pad: int) -> bool:
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok &= libc.mallopt(M_TRIM_THRESHOLD, trim) == 1
    ok &= libc.mallopt(M_TOP_PAD, top_pad) == 1
    return bool(ok)


@contextlib.contextmanager
def build_allocator(*, trim: bool = True) -> Iterator[bool]:
    """Within the block, glibc keeps and reuses freed memory; yields whether it applied.

    On the way out the moderate settings come back and, with ``trim``, the free memory goes
    back to the system (``malloc_trim``: 15-50 ms after a 1 M-record build). A process that
    ends right after (the ``flowatlas build`` command) passes ``trim=False``: its memory
    goes back when it exits.
    """
    libc = _glibc()
    if libc is None:
        yield False
        return
    applied = _set(libc, BUILD_TRIM_THRESHOLD, BUILD_TOP_PAD)
    try:
        yield applied
    finally:
        _set(libc, AFTER_TRIM_THRESHOLD, AFTER_TOP_PAD)
        if trim:
            libc.malloc_trim(0)
