"""The allocator settings a build runs under: applied on glibc, undone afterwards."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import numpy as np
import pytest

from flowatlas.engine import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_build_allocator_applies_and_returns_memory() -> None:
    if allocator._glibc() is None:
        pytest.skip("not glibc")
    with allocator.build_allocator() as applied:
        assert applied
        a = np.ones(4_000_000)  # 32 MB: below the mmap threshold, served from the heap
        assert a.sum() == 4_000_000
        del a
    # afterwards the settings are moderate again and mallopt still accepts them
    assert allocator._set(
        allocator._glibc(), allocator.AFTER_TRIM_THRESHOLD, allocator.AFTER_TOP_PAD
    )


RSS_SCRIPT = """
import numpy as np, psutil
from flowatlas.engine import allocator
proc = psutil.Process()
rss = lambda: proc.memory_info().rss >> 20
before = rss()
with allocator.build_allocator() as applied:
    assert applied
    blocks = [np.ones(2_000_000) for _ in range(20)]  # 20 x 16 MB, below the mmap threshold
    del blocks
    kept = rss()  # freed inside the block: kept for the next task
after = rss()  # the block's exit trims: returned to the system
print(before, kept, after)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_build_allocator_keeps_memory_inside_and_returns_it_after() -> None:
    """What the settings are for, measured in resident memory: 320 MB freed during a build
    stay in the process (no fresh zeroed pages for the next task) and leave it afterwards."""
    if allocator._glibc() is None:
        pytest.skip("not glibc")
    p = subprocess.run([sys.executable, "-c", RSS_SCRIPT], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    before, kept, after = map(int, p.stdout.split())
    assert kept - before > 250, (before, kept, after)
    assert after - before < 60, (before, kept, after)


def test_build_allocator_is_a_no_op_without_glibc(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    with allocator.build_allocator() as applied:
        assert applied is False


def _another_pool():
    """An Arrow pool other than the system one (mimalloc or jemalloc, whichever is built)."""
    import pyarrow as pa

    for make in (pa.mimalloc_memory_pool, pa.jemalloc_memory_pool):
        try:
            return make()
        except NotImplementedError:  # pragma: no cover - a pyarrow built without it
            continue
    pytest.skip("this pyarrow has no pool but the system one")  # pragma: no cover


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
@pytest.mark.parametrize("fails", [False, True])
def test_build_allocator_serves_arrow_from_malloc_and_restores_its_pool(fails: bool) -> None:
    """During a build Arrow's buffers come from the system pool (``malloc``'s heap, which
    the build keeps for reuse); the default pool from before comes back afterwards, also
    when the build fails, and a buffer made inside is freed by its own pool after."""
    import pyarrow as pa

    if allocator._glibc() is None:
        pytest.skip("not glibc")
    before = pa.default_memory_pool()
    other = _another_pool()
    pa.set_memory_pool(other)
    try:
        with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
            with allocator.build_allocator(trim=False):
                assert pa.default_memory_pool().backend_name == "system"
                system = pa.system_memory_pool()
                held = system.bytes_allocated()
                kept = pa.allocate_buffer(1 << 20)
                assert system.bytes_allocated() - held >= 1 << 20
                if fails:
                    raise RuntimeError("a failed build")
        assert pa.default_memory_pool().backend_name == other.backend_name
        assert pa.default_memory_pool().backend_name != "system"
        if not fails:
            del kept  # freed by the system pool, though it is not the default now
            assert system.bytes_allocated() == held
    finally:
        pa.set_memory_pool(before)


def test_build_allocator_leaves_arrow_alone_without_glibc(monkeypatch) -> None:
    """Where glibc's settings do not apply, Arrow keeps its pool: the system one is only
    chosen for the heap the build keeps."""
    import pyarrow as pa

    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    before = pa.default_memory_pool()
    other = _another_pool()
    pa.set_memory_pool(other)
    try:
        with allocator.build_allocator():
            assert pa.default_memory_pool().backend_name == other.backend_name
    finally:
        pa.set_memory_pool(before)


class _FakeLibc:
    """glibc's two calls, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.mark.parametrize("trim", [True, False])
def test_build_allocator_trims_unless_told_not_to(monkeypatch, trim: bool) -> None:
    """``trim=False`` (a process about to end: the build command) restores the settings but
    skips ``malloc_trim``; the default trims."""
    libc = _FakeLibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: libc)
    kwargs = {} if trim else {"trim": False}
    with allocator.build_allocator(**kwargs) as applied:
        assert applied
    assert [c for c in libc.calls if c[0] == "mallopt"][-3:] == [
        ("mallopt", allocator.M_MMAP_THRESHOLD),
        ("mallopt", allocator.M_TRIM_THRESHOLD),
        ("mallopt", allocator.M_TOP_PAD),
    ]
    assert (("malloc_trim", 0) in libc.calls) is trim


def test_glibc_opened_by_its_name_without_ldconfig(monkeypatch) -> None:
    """glibc is opened as ``libc.so.6``: ``find_library`` (a child running ``ldconfig -p``)
    is only the fallback where that name does not open (musl)."""
    import ctypes.util

    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")

    def refused(name: str) -> str:
        raise AssertionError("find_library called")

    monkeypatch.setattr(ctypes.util, "find_library", refused)
    assert allocator._open_libc()._name == allocator.GLIBC_SONAME


def test_libc_falls_back_to_find_library(monkeypatch) -> None:
    import ctypes
    import ctypes.util

    opened: list[str | None] = []

    class FakeCDLL:
        def __init__(self, name: str | None) -> None:
            opened.append(name)
            if name == allocator.GLIBC_SONAME:
                raise OSError("no such library")
            self._name = name

    monkeypatch.setattr(ctypes, "CDLL", FakeCDLL)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc.musl-x86_64.so.1")
    assert allocator._open_libc()._name == "libc.musl-x86_64.so.1"
    assert opened == [allocator.GLIBC_SONAME, "libc.musl-x86_64.so.1"]


#: a script's lines that take a block on a new thread (``got[0]``): from glibc's main heap
#: where the arenas are limited to one, else from the thread's own arena
THREAD_BLOCK = """
got = []
def on_a_thread():
    p = libc.malloc(100_000)
    got.append(p)
    libc.free(p)
t = threading.Thread(target=on_a_thread)
t.start()
t.join()
"""

HEAP_SCRIPT = (
    """
import re, sys, threading
from flowatlas.engine import allocator
applied = allocator.huge_page_heap()
again = allocator.huge_page_heap()
libc = allocator._glibc()
start, end = allocator._heap_start(), libc.sbrk(0)
"""
    + THREAD_BLOCK
    + """
smaps = open("/proc/self/smaps").read()
heap_flags = [
    re.search(r"^VmFlags:(.*)$", block, re.M).group(1).split()
    for block in re.split(r"\\n(?=[0-9a-f]+-[0-9a-f]+ )", smaps)
    if block.split("\\n", 1)[0].endswith("[heap]")
]
print(applied, again, start <= got[0] < end, (end - start) >> 20,
      bool(heap_flags) and all("hg" in f for f in heap_flags))
"""
)


def _heap_script(env: dict[str, str]) -> list[str]:
    import os

    p = subprocess.run(
        [sys.executable, "-c", HEAP_SCRIPT],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and madvise: Linux only")
def test_huge_page_heap_serves_every_thread_from_one_advised_heap() -> None:
    """After ``huge_page_heap``: a new thread's block comes from the main heap (one arena),
    the heap was grown ahead, and all of it is advised for huge pages (``hg``)."""
    if allocator._glibc() is None or not allocator._thp_available():
        pytest.skip("not glibc, or no transparent huge pages")
    applied, again, on_heap, heap_mb, advised = _heap_script({})
    ahead = min(allocator.HEAP_AHEAD, allocator._physical_memory() // 4) >> 20
    assert (applied, again, on_heap, advised) == ("True", "True", "True", "True")
    assert int(heap_mb) >= ahead


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and madvise: Linux only")
def test_huge_page_heap_off_leaves_the_arenas_alone() -> None:
    """``FLOWATLAS_HUGE_PAGES=0``: no arena limit (the thread's block is elsewhere), no advice."""
    if allocator._glibc() is None:
        pytest.skip("not glibc")
    applied, again, on_heap, _, advised = _heap_script({allocator.HUGE_PAGES_VAR: "0"})
    assert (applied, again, on_heap, advised) == ("False", "False", "False", "False")


@pytest.mark.parametrize(
    ("setting", "available"),
    [("always [madvise] never\n", True), ("[always] madvise never\n", True),
     ("always madvise [never]\n", False), (None, False)],
)  # fmt: skip
def test_thp_available_reads_the_kernel_setting(tmp_path, monkeypatch, setting, available) -> None:
    path = tmp_path / "enabled"
    if setting is not None:
        path.write_text(setting)
    monkeypatch.setattr(allocator, "THP_SETTING", str(path))
    assert allocator._thp_available() is available


def test_huge_page_heap_is_a_no_op_without_glibc_or_thp(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.huge_page_heap() is False
    monkeypatch.setattr(allocator, "_glibc", lambda: _FakeLibc())
    monkeypatch.setattr(allocator, "_thp_available", lambda: False)
    assert allocator.huge_page_heap() is False


PAGES_SCRIPT = (
    """
import sys, threading
from numpy._core.multiarray import _get_madvise_hugepage
from flowatlas.engine import allocator
allocator.HUGE_PAGES_MIN_BYTES = int(sys.argv[2])
took = allocator.choose_pages(sys.argv[1])
libc = allocator._glibc()
"""
    + THREAD_BLOCK
    + """
on_heap = allocator._heap_start() <= got[0] < libc.sbrk(0)
print(took, allocator._heap_advised, bool(_get_madvise_hugepage()), on_heap)
"""
)


def _pages(archive, threshold: int, setting: str | None) -> list[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != allocator.HUGE_PAGES_VAR}
    if setting is not None:
        env[allocator.HUGE_PAGES_VAR] = setting
    p = subprocess.run(
        [sys.executable, "-c", PAGES_SCRIPT, str(archive), str(threshold)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and madvise: Linux only")
@pytest.mark.parametrize(
    ("size", "setting", "huge"),
    [(5000, None, True), (4999, None, False), (10, "1", True), (10**6, "0", False)],
)
def test_choose_pages_takes_huge_pages_for_a_large_archive_only(tmp_path, size, setting, huge):
    """The build command's pages: the huge-page heap from ``HUGE_PAGES_MIN_BYTES`` of archive
    on (or with ``FLOWATLAS_HUGE_PAGES=1``), numpy's arrays left advised; below it (or with
    ``=0``) no heap advice and numpy no longer advises its large arrays either. Every thread
    allocates from the one main heap in both cases."""
    if allocator._glibc() is None or not allocator._thp_available():
        pytest.skip("not glibc, or no transparent huge pages")
    (tmp_path / "day=1").mkdir()
    (tmp_path / "day=1" / "a.parquet").write_bytes(b"x" * (size // 2))
    (tmp_path / "b.parquet").write_bytes(b"x" * (size - size // 2))
    took, advised, numpy_advises, on_heap = _pages(tmp_path, 5000, setting)
    assert (took, advised, numpy_advises) == (str(huge), str(huge), str(huge))
    assert on_heap == "True"  # one heap for every thread either way


def test_archive_bytes_counts_files_below_until_told_to_stop(tmp_path) -> None:
    """Every file below the folder counts, a file alone is its size, a missing path 0; the
    walk stops once the count reaches ``stop`` (a 35 GB archive is not walked to the end)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x").write_bytes(b"1" * 300)
    (tmp_path / "a" / "y").write_bytes(b"1" * 200)
    (tmp_path / "z").write_bytes(b"1" * 100)
    assert allocator.archive_bytes(tmp_path, 10**9) == 600
    assert allocator.archive_bytes(tmp_path / "z", 10**9) == 100
    assert allocator.archive_bytes(tmp_path / "missing", 10**9) == 0
    assert 100 <= allocator.archive_bytes(tmp_path, 100) < 600


def test_numpy_huge_pages_switches_numpys_advice_and_returns_the_old_one() -> None:
    before = allocator.numpy_huge_pages(False)
    try:
        assert allocator.numpy_huge_pages(True) is False
        assert allocator.numpy_huge_pages(True) is True
    finally:
        allocator.numpy_huge_pages(before)
