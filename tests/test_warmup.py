"""Compiled kernels are cached: where the cache goes, and the demo's warm-up of the build."""

from __future__ import annotations

import os
import subprocess
import sys

from flowatlas import numba_cache_dir


def test_cache_dir_is_numbas_choice_where_writable(tmp_path):
    pkg, home = str(tmp_path / "pkg"), str(tmp_path / "home")
    writable = {pkg, home}.__contains__
    env = {"XDG_CACHE_HOME": home}
    assert numba_cache_dir(env, pkg, writable) is None  # beside the sources
    assert numba_cache_dir(env, pkg, {home}.__contains__) is None  # the user's cache folder
    assert numba_cache_dir({"NUMBA_CACHE_DIR": "/x", **env}, pkg, lambda p: False) is None


def test_cache_dir_falls_back_to_the_temporary_folder(tmp_path):
    got = numba_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}, str(tmp_path), lambda p: False)
    assert got is not None and os.path.basename(got).startswith("flowatlas-numba-cache-")
    # and numba then caches there: a kernel compiled in a fresh process lands in that folder
    # (through the demo's opt-in warm-up, FLOWATLAS_WARMUP=1: a second process compiles)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), FLOWATLAS_WARMUP="1")
    code = (
        "from flowatlas import warmup\n"
        "assert warmup.cache_is_cold()\n"
        "proc = warmup.start(workers=2)\n"
        "assert proc.name == 'flowatlas-warmup'\n"
        "proc.join()\n"
        "assert proc.exitcode == 0 and not warmup.cache_is_cold()\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    cached = [p.name for p in (tmp_path / "cache").rglob("*.nbi")]
    assert any(n.startswith("records._records_loop") for n in cached), cached


def test_one_compile_of_the_records_kernel_whatever_the_buffer_alignment():
    """Address words are a view of Arrow's buffer (read-only) or, when it is not 8-byte
    aligned, a copy (writable); the kernel takes both as one type, so it compiles once."""
    import numpy as np
    import pyarrow as pa

    from flowatlas.addresses import bytes16_words
    from flowatlas.config import Config
    from flowatlas.engine.pipeline import orient_and_cell
    from flowatlas.inspect import _plan
    from flowatlas.kernels.records import _records
    from flowatlas.warmup import warm_table

    table = warm_table(64)
    words = np.frombuffer(b"\0" * 4 + table.column("src_addr").combine_chunks().buffers()[1]
                          .to_pybytes(), np.uint8)[4:]  # fmt: skip
    shifted = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), 64, [None, pa.py_buffer(words)])
    assert shifted.buffers()[1].address % 8 and bytes16_words(shifted).flags.writeable
    assert not bytes16_words(table.column("src_addr")).flags.writeable
    odd = table.set_column(table.schema.get_field_index("src_addr"), "src_addr", shifted)
    plan = _plan(Config(), None)
    a, _ = orient_and_cell(table.select(odd.column_names), plan, "raw")
    after_aligned = set(map(str, _records.signatures))
    b, _ = orient_and_cell(odd, plan, "raw")
    assert np.array_equal(a.key, b.key) and np.array_equal(a.vol, b.vol)
    assert set(map(str, _records.signatures)) == after_aligned  # no second compile


def test_lookup_takes_one_thread_inside_serial_kernels():
    """Inside serial_kernels (the build's threads) a large lookup runs the serial kernel and
    never compiles the parallel one; outside it, the parallel one (a fresh process, so the
    dispatchers hold only what this code path loaded)."""
    code = (
        "import numpy as np\n"
        "from flowatlas.kernels import serial_kernels\n"
        "from flowatlas.kernels.lpm import _lookup_cpu, _lookup_serial, build_index, lookup_cpu\n"
        "index = build_index(np.zeros(2, np.uint64), np.array([0, 1 << 40], np.uint64),\n"
        "                    np.array([-1, 7], np.int32))\n"
        "lo = np.arange(60_000, dtype=np.uint64) << np.uint64(30)\n"
        "hi = np.zeros_like(lo)\n"
        "want = np.where(lo >= np.uint64(1 << 40), 7, -1)\n"
        "with serial_kernels():\n"
        "    assert (lookup_cpu(index, hi, lo) == want).all()\n"
        "assert _lookup_serial.signatures and not _lookup_cpu.signatures\n"
        "assert (lookup_cpu(index, hi, lo) == want).all()\n"
        "assert _lookup_cpu.signatures\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)


def test_the_demo_starts_no_warmup_unless_asked(monkeypatch):
    """Off by default (it cost CPU and saved no wall time: flowatlas/warmup.py), on with
    FLOWATLAS_WARMUP=1 where the cache is cold."""
    import multiprocessing

    from flowatlas import warmup

    monkeypatch.delenv("FLOWATLAS_WARMUP", raising=False)
    assert isinstance(warmup.start(), warmup._Done)
    monkeypatch.setenv("FLOWATLAS_WARMUP", "0")
    assert isinstance(warmup.start(), warmup._Done)
    assert not [p for p in multiprocessing.active_children() if p.name == "flowatlas-warmup"]
