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
    # (through the demo's warm-up: a second process compiles)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("FLOWATLAS_WARMUP", None)
    code = (
        "from flowatlas import warmup\n"
        "assert warmup.cache_is_cold()\n"
        "proc = warmup.start()\n"
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

    table = _warm_table(64)
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


def test_the_warmup_starts_only_on_a_cold_cache_unless_turned_off(monkeypatch, tmp_path):
    """FLOWATLAS_WARMUP=0 or a disabled JIT: no process (and a joinable stand-in)."""
    import multiprocessing

    from flowatlas import warmup

    for name, value in (("FLOWATLAS_WARMUP", "0"), ("NUMBA_DISABLE_JIT", "1")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            started = warmup.start()
            assert isinstance(started, warmup._Done)
            started.join()
    assert not [p for p in multiprocessing.active_children() if p.name == "flowatlas-warmup"]


def test_recorded_signatures_parse_back_to_numba_types():
    from flowatlas._kernel_list import BUILD
    from flowatlas.warmup import numba_types, parse_signature

    names = numba_types()
    for module, attr, sig in BUILD:
        assert module.startswith("flowatlas.") and attr.isidentifier()
        assert repr(parse_signature(sig, names)) == sig


def _compiled_names(kernels) -> set[tuple[str, str]]:
    """``(module.function, signature)`` as numba's compile events name each listed kernel."""
    import importlib

    out = set()
    for module, attr, sig in kernels:
        func = getattr(importlib.import_module(module), attr).py_func
        out.add((f"{func.__module__}.{func.__qualname__}", sig))
    return out


def test_a_cold_demo_compiles_only_listed_kernels_each_in_one_process(tmp_path):
    """The first demo after an install: the warm-up process compiles the build's kernels
    while the demo synthesizes, and never a synthesizer's kernel; every kernel any process
    compiles is one of the recorded (kernel, signature) pairs, so the build itself compiles
    nothing the warm-up did not cover. Fails when flowatlas/_kernel_list.py is stale: rerun
    ``python -m flowatlas.warmup --record``."""
    from pathlib import Path

    from flowatlas._kernel_list import BUILD, SYNTH

    log = tmp_path / "compile.log"
    here = Path(__file__).resolve().parent
    env = dict(
        os.environ,
        NUMBA_CACHE_DIR=str(tmp_path / "cache"),
        FLOWATLAS_COMPILE_LOG=str(log),
        PYTHONPATH=os.pathsep.join(filter(None, [str(here / "compile_log"),
                                                 os.environ.get("PYTHONPATH")])),
    )  # fmt: skip
    env.pop("FLOWATLAS_WARMUP", None)
    r = subprocess.run(
        [sys.executable, "-m", "flowatlas", "demo", "--out", str(tmp_path / "demo"), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    assert "warm-up stopped" not in r.stderr, r.stderr
    events = [line.split("\t") for line in log.read_text().splitlines()]
    ours = [(proc, (name, sig)) for proc, name, sig in events if name.startswith("flowatlas.")]
    build, synth = _compiled_names(BUILD), _compiled_names(SYNTH)
    warm = {k for proc, k in ours if proc == "flowatlas-warmup"}
    # the warm-up starts with the slowest kernel to compile (the first listed)
    assert _compiled_names(BUILD[:1]) <= warm, (BUILD[0], sorted(warm))
    assert not warm & synth, sorted(warm & synth)
    unlisted = {k for _, k in ours} - build - synth
    assert not unlisted, sorted(unlisted)
    twice = [k for k in build if sum(1 for _, e in ours if e == k) > 1]
    assert len(twice) <= 3, twice  # where the two walks meet; nested kernels included


def _warm_table(n: int):
    """``n`` random flow records in flow schema v1: IPv4 and IPv6, both directions, ours
    198.18.0.0/24 behind exporter 10.10.0.1 (interface 501 a private link)."""
    import numpy as np
    import pyarrow as pa

    from flowatlas.addresses import hilo_to_bytes16

    rng = np.random.default_rng(0)
    v4 = np.uint64(0xFFFF_0000_0000)
    ours = v4 | np.uint64(0xC612_0000)  # 198.18.0.0/24
    theirs = v4 | np.uint64(0x0A00_0000)  # 10.x: remote
    local = ours | rng.integers(1, 255, n).astype(np.uint64)
    remote = theirs | rng.integers(1, 1 << 24, n).astype(np.uint64)
    six = rng.random(n) < 0.3
    hi = np.where(six, np.uint64(0x2001_0DB8 << 32), np.uint64(0))
    remote_lo = np.where(six, rng.integers(1, 1 << 40, n).astype(np.uint64), remote)
    egress = rng.random(n) < 0.5
    src_hi, dst_hi = np.where(egress, 0, hi), np.where(egress, hi, 0)
    src_lo = np.where(egress, local, remote_lo)
    dst_lo = np.where(egress, remote_lo, local)
    day_us = 1_750_000_000_000_000
    ts = pa.timestamp("us", tz="UTC")
    exporter = np.full(n, v4 | np.uint64(0x0A0A_0001))
    return pa.table(
        {
            "time_start": pa.array(day_us + rng.integers(0, 86_400_000_000, n)).cast(ts),
            "time_end": pa.array(np.full(n, day_us)).cast(ts),
            "exporter": hilo_to_bytes16(np.zeros(n, np.uint64), exporter),
            "in_if": pa.array(rng.choice([1, 501], n).astype(np.uint32)),
            "out_if": pa.array(rng.choice([2, 101], n).astype(np.uint32)),
            "src_addr": hilo_to_bytes16(src_hi.astype(np.uint64), src_lo),
            "dst_addr": hilo_to_bytes16(dst_hi.astype(np.uint64), dst_lo),
            "src_port": pa.array(rng.integers(0, 65536, n).astype(np.uint16)),
            "dst_port": pa.array(rng.integers(0, 65536, n).astype(np.uint16)),
            "proto": pa.array(np.full(n, 6, np.uint8)),
            "bytes": pa.array(rng.integers(40, 10**7, n).astype(np.uint64)),
            "packets": pa.array(rng.integers(1, 10**4, n).astype(np.uint64)),
            "sampling_rate": pa.array(rng.choice([1, 1000], n).astype(np.uint32)),
            "src_as": pa.array(np.zeros(n, np.uint32)),
            "dst_as": pa.array(np.zeros(n, np.uint32)),
        }
    )
