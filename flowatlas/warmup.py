"""Compiling the build's kernels ahead of time, beside other work (opt-in, off by default).

The CPU kernels are compiled by numba on first use and cached on disk (``cache=True``), so
only the first run after an install pays for compiling them. With ``FLOWATLAS_WARMUP=1``,
``flowatlas demo`` compiles the build's kernels in a second process while the parent
process synthesizes the archive: :func:`start` builds a tiny in-memory archive the way the
demo's build runs (threads, shuffle in memory), and the cache it writes is what the real
build then loads. When the cache is already there, nothing is started.

Off by default, because it did not pay: the warm-up must first compile the kernels the
synthesizer compiles too (address parsing, the classification compiler, the prefix index:
about 7 s of one core), so its end, which the build waits for, comes little before the build
would have compiled the rest itself; and it adds about 10 s of CPU to the first demo,
which on a busy machine makes it slower (bench/RESULTS.md, "First demo after an install";
``python bench/bench_first_demo.py --warmup`` measures it).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Any

#: records of the warm-up archive: enough for every code path (IPv4 and IPv6, every
#: direction, a private link), few enough to cost nothing once compiled
RECORDS = 4_000


def warm_build_kernels(workers: int = 2) -> None:
    """Build a cube of a tiny synthetic table (compiles and caches every build kernel)."""
    from flowatlas.config import config_from_dict
    from flowatlas.engine.build import build_cube_from_table

    cfg = config_from_dict(
        {
            "regions": [{"name": "A", "prefixes": ["198.18.0.0/24"], "exporters": ["10.10.0.1"]}],
            "links": [{"exporter": "10.10.0.1", "interfaces": [501]}],
        }
    )
    with tempfile.TemporaryDirectory(prefix="flowatlas-warmup-") as tmp:
        build_cube_from_table(warm_table(RECORDS), Path(tmp) / "cube", config=cfg, workers=workers)
    # kernels this tiny build does not reach: the top-ASN ranking (tables that name ASNs) and
    # the expansion of a table file's root index (builds given a compiled .fatable)
    import numpy as np

    from flowatlas.kernels.lpm import expand_runs
    from flowatlas.kernels.topk import top_k_per_key

    top_k_per_key(np.zeros(1, np.int64), np.zeros(1, np.uint64), 1)
    expand_runs(np.zeros(1, np.uint32), np.zeros(1, np.uint32), 1)


def warm_table(n: int) -> Any:
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


def _child(workers: int) -> None:
    with contextlib.suppress(Exception):  # a failed warm-up only means the build compiles
        warm_build_kernels(workers)


def cache_is_cold() -> bool:
    """True when the build's main kernel has no compiled code cached on disk yet.

    (Asks numba where that kernel's cache index lives; any doubt counts as cold.)
    """
    try:
        from flowatlas.kernels.records import _records

        return not Path(_records._cache._cache_file._index_path).exists()
    except Exception:  # numba's cache internals moved: warm up, which is always safe
        return True


class _Done:
    """What :func:`start` returns when there is nothing to warm up."""

    def join(self, timeout: float | None = None) -> None:
        return None


def start(workers: int = 2) -> Any:
    """Start :func:`warm_build_kernels` in another process if ``FLOWATLAS_WARMUP=1`` and the
    kernel cache is cold; ``join()`` the result before the build."""
    if os.environ.get("FLOWATLAS_WARMUP") != "1" or not cache_is_cold():
        return _Done()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_child, args=(workers,), daemon=True, name="flowatlas-warmup")
    proc.start()
    return proc
