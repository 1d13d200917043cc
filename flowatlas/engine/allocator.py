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

Arrow's buffers (the Parquet pages a map task decodes, the cube's tables as they are encoded)
come from the same heap during a build: Arrow's default pool (mimalloc or jemalloc) keeps its
own segments and hands freed pages back to the system on its own decay timer, so the next
batch's buffers were fresh pages again, and its segments were memory the glibc heap could not
reuse for the kernels' arrays. With Arrow's system pool they are ``malloc``'s blocks, reused
like the rest (world 5 M: 70-140 MB less resident memory at the peak, bench/RESULTS.md); the
previous pool comes back afterwards.

A process that runs one build and ends (the ``flowatlas build`` command) also picks its pages
before it starts a thread (:func:`choose_pages`): for a large archive :func:`huge_page_heap`,
every thread's blocks from one heap backed by 2 MiB pages as it is touched (a sixth of the
page faults, less CPU in the kernel and in TLB misses: 19 s of user CPU at 10^9 records); for
a smaller one the same single heap (:func:`one_arena`) but no huge pages at all, numpy's own
advice for its large arrays included. A 2 MiB page is zeroed whole, and on a VM that hands
idle memory back to its host (virtio-balloon free page reporting hands back free 2 MiB
blocks) each one is faulted in from the host again after the machine idled: a build after
idle, what a user runs, paid about a second of system time more at 5 M records than it
saved (bench/RESULTS.md, fourteenth round).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Iterator

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MADV_HUGEPAGE = 14  # madvise(2) advice, Linux

MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit)
BUILD_TRIM_THRESHOLD = 1 << 31
BUILD_TOP_PAD = 256 << 20
AFTER_TRIM_THRESHOLD = 64 << 20
AFTER_TOP_PAD = 128 << 10
#: glibc's library on Linux, opened by this name first: ``ctypes.util.find_library("c")``
#: runs ``ldconfig -p`` in a child process (7 ms of wall before a build's first map task)
GLIBC_SONAME = "libc.so.6"
#: how far :func:`huge_page_heap` grows the heap ahead (at most a quarter of the machine's
#: memory): address space only, no page is touched; below ``BUILD_TRIM_THRESHOLD``, so the
#: free that follows leaves it in place
HEAP_AHEAD = 3 << 29
#: the block whose allocation and free grow the heap (below ``MMAP_THRESHOLD``)
HEAP_GROWER = 16 << 20
#: the kernel's setting for transparent huge pages: ``always``, ``madvise`` or ``never``
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
#: ``0`` in the environment turns :func:`huge_page_heap` off, ``1`` has
#: :func:`choose_pages` take it whatever the archive's size
HUGE_PAGES_VAR = "FLOWATLAS_HUGE_PAGES"
#: archives of at least this many bytes (on disk) get the huge-page heap from
#: :func:`choose_pages`: about 120 M records of the auto layout (10^9 records: 35 GB)
HUGE_PAGES_MIN_BYTES = 4 << 30


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
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        libc.sbrk.argtypes = [ctypes.c_ssize_t]
        libc.sbrk.restype = ctypes.c_void_p
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
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
        with arrow_from_malloc():
            yield applied
    finally:
        _set(libc, AFTER_TRIM_THRESHOLD, AFTER_TOP_PAD)
        if trim:
            libc.malloc_trim(0)


@contextlib.contextmanager
def arrow_from_malloc() -> Iterator[None]:
    """Within the block Arrow allocates from ``malloc`` (its system pool), not from its
    default pool; the pool that was the default comes back on the way out.

    Buffers remember the pool they came from, so an Arrow object made inside the block and
    kept after it is freed correctly, whichever pool is the default then.
    """
    import pyarrow as pa

    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def huge_page_heap(ahead: int = HEAP_AHEAD) -> bool:
    """Every thread's ``malloc`` from one heap, grown ``ahead`` bytes and advised for
    transparent huge pages; True if applied. For a process that runs one build and ends (the
    ``flowatlas build`` command), called before it starts a thread: glibc's arena limit is
    then fixed for the process's life.

    A build's kernels allocate their arrays through ``malloc`` (numba's runtime), on the
    worker threads: by default each thread has its own arena of 64 MiB heaps, first touched
    in 4 KiB pages. A world 1 M build took 105 k page faults, 0.2 s of system CPU (of 1.55 s),
    and ~10 ms more at its exit for unmapping them. Here glibc is held to one arena (the main
    heap, ``M_ARENA_MAX``), that heap is grown ahead of the build (one large block allocated
    and freed: address space, nothing touched) and ``madvise(MADV_HUGEPAGE)`` asks the kernel
    to back it with 2 MiB pages as it is touched: 15 k faults, ~80 ms less CPU. Where the
    kernel has no transparent huge pages (``never``), with another C library, or with
    ``FLOWATLAS_HUGE_PAGES=0``, nothing changes. Growth past ``ahead`` is in 4 KiB pages, as
    before. The results do not change, only the pages under them.
    """
    global _heap_advised
    libc = _glibc()
    if libc is None or os.environ.get(HUGE_PAGES_VAR) == "0" or not _thp_available():
        return False
    if _heap_advised:  # once a process: the arena limit cannot change back
        return True
    ahead = min(ahead, _physical_memory() // 4)
    if not one_arena():
        return False
    # the block's free must neither trim the heap back nor go to mmap: the build's settings
    if not _set(libc, BUILD_TRIM_THRESHOLD, ahead):
        return False
    libc.free(libc.malloc(HEAP_GROWER))
    _set(libc, BUILD_TRIM_THRESHOLD, BUILD_TOP_PAD)
    start, end = _heap_start(), libc.sbrk(0)
    if start is None or not end or end <= start:
        return False
    _heap_advised = libc.madvise(start, end - start, MADV_HUGEPAGE) == 0
    return _heap_advised


_heap_advised = False


def one_arena() -> bool:
    """Every thread's ``malloc`` from glibc's main heap (``M_ARENA_MAX`` 1); True if applied.
    Called before the process starts a thread: a thread keeps the arena it first took.

    With an arena per thread, memory one worker thread freed was not there for the other's
    next task: world 5 M peaked at 1.13 GB of anonymous memory in 4 KiB pages, 1.04-1.06 GB
    with one arena, for the same CPU (bench/RESULTS.md, fourteenth round).
    """
    libc = _glibc()
    return libc is not None and libc.mallopt(M_ARENA_MAX, 1) == 1


def _thp_available() -> bool:
    """Whether the kernel gives transparent huge pages to memory advised for them."""
    try:
        with open(THP_SETTING) as f:
            setting = f.read()
    except OSError:
        return False
    return "[never]" not in setting


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def _heap_start() -> int | None:
    """Where the process's ``brk`` heap begins (``[heap]`` in its memory map), or None."""
    try:
        with open("/proc/self/maps") as f:
            starts = [int(line.split("-", 1)[0], 16) for line in f if line.endswith("[heap]\n")]
    except OSError:
        return None
    return min(starts, default=None)


def choose_pages(archive: str | os.PathLike[str]) -> bool:
    """The pages of a process that builds ``archive`` once and ends (the ``flowatlas build``
    command), chosen before it starts a thread; True if huge pages were taken.

    At least :data:`HUGE_PAGES_MIN_BYTES` of archive (or ``FLOWATLAS_HUGE_PAGES=1``):
    :func:`huge_page_heap`. Smaller (or ``FLOWATLAS_HUGE_PAGES=0``): one heap for every
    thread as well (:func:`one_arena`), but in 4 KiB pages, and numpy no longer advises its
    arrays of 4 MiB and more for huge pages (:func:`numpy_huge_pages`). A small build
    touches its memory about once, so it gains little from fewer TLB misses and pays each
    2 MiB page whole, from the host again after the VM idled; a large one reuses the same
    heap for minutes.
    """
    setting = os.environ.get(HUGE_PAGES_VAR)
    large = setting != "0" and archive_bytes(archive, HUGE_PAGES_MIN_BYTES) >= HUGE_PAGES_MIN_BYTES
    if setting == "1" or large:
        return huge_page_heap()
    one_arena()
    numpy_huge_pages(False)
    return False


def archive_bytes(path: str | os.PathLike[str], stop: int) -> int:
    """Bytes of the files at ``path`` (a file, or a folder walked below), counted until they
    reach ``stop``; 0 where there is nothing to read (the build says why)."""
    total = 0
    try:
        if not os.path.isdir(path):
            return os.path.getsize(path)
        for root, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(root, name))
                if total >= stop:
                    return total
    except OSError:
        return total
    return total


def numpy_huge_pages(on: bool) -> bool:
    """Whether numpy advises its new arrays of 4 MiB and more for transparent huge pages
    (its default on Linux), set to ``on``; returns the setting before. False (and nothing
    set) where this numpy has no such switch."""
    try:
        from numpy._core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage
    except ImportError:  # pragma: no cover - numpy < 2
        try:
            from numpy.core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage
        except ImportError:
            return False
    before = bool(_get_madvise_hugepage())
    _set_madvise_hugepage(bool(on))
    return before
