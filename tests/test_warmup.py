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
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    code = (
        "from flowatlas.warmup import cache_is_cold, warm_build_kernels\n"
        "assert cache_is_cold()\n"
        "warm_build_kernels(workers=2)\n"
        "assert not cache_is_cold()\n"
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
