"""Benchmark: the IPv4 root's size (2^16 or 2^24 entries) against the table's IPv4 intervals.

For the world and heavy bench tables and tables between them (the heavy table's step function
coarsened to every k-th interval: its spread, fewer intervals), per IPv4 root size: the index
build (its fresh memory included), the index bytes, and the serial driver's ns per address
on the world archive's and the heavy archive's own remote addresses (both ends of 1 M records,
so the address mix and skew are the workloads'). Chooses ``SMALL_V4_INTERVALS``
(flowatlas.kernels.lpm) by where 2^16 stops being as fast.

    python bench/bench_roots.py --data /work/data20 [--records 1000000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average

from flowatlas.classify.table import PrefixTable
from flowatlas.kernels.lpm import build_index, ipv4_intervals, lookup_cpu


def addresses(archive: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) of the source and destination addresses of an archive's first n records."""
    files = sorted(str(f) for f in archive.glob("day=*/*.parquet"))
    table = ds.dataset(files, format="parquet").head(n, columns=["src_addr", "dst_addr"])
    his, los = [], []
    for col in ("src_addr", "dst_addr"):
        raw = np.frombuffer(table.column(col).combine_chunks().buffers()[1], np.uint8)
        words = raw[: 16 * table.num_rows].reshape(-1, 2, 8).view(">u8")[..., 0]
        his.append(words[:, 0].astype(np.uint64))
        los.append(words[:, 1].astype(np.uint64))
    return np.concatenate(his), np.concatenate(los)


def coarsened(table: PrefixTable, every: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The step function keeping every ``every``-th interval start (the first, ::, kept)."""
    keep = np.arange(0, table.starts_hi.size, every)
    return table.starts_hi[keep], table.starts_lo[keep], table.values[keep]


def best_ns(index, hi: np.ndarray, lo: np.ndarray, repeat: int) -> float:
    """Best of ``repeat`` runs of the serial driver, in ns per address."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        lookup_cpu(index, hi, lo, parallel=False)
        best = min(best, time.perf_counter() - t0)
    return best / hi.size * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/data20"))
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--every", type=int, nargs="+", default=[1024, 256, 128, 64, 16, 1],
        help="heavy tables keeping every k-th interval",
    )  # fmt: skip
    args = ap.parse_args()
    world = PrefixTable.load(args.data / "synth-r1000000-d184-s1.fatable")
    heavy = PrefixTable.load(args.data / "heavy-r1000000-s1.fatable")
    probes = {
        "world": addresses(args.data / "synth-r1000000-d184-s1", args.records),
        "heavy": addresses(args.data / "heavy-r1000000-s1", args.records),
    }
    tables = {"world": (world.starts_hi, world.starts_lo, world.values)}
    for every in args.every:
        tables[f"heavy/{every}"] = coarsened(heavy, every)
    build_index(*tables["world"], 16, 16)  # numba warm-up
    print(f"load {load_average()}")
    print(
        "| table | IPv4 intervals | root | build ms | build minflt | index MiB "
        "| world ns/addr | heavy ns/addr |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, steps in tables.items():
        n4 = ipv4_intervals(steps[0], steps[1])
        for bits4 in (16, 24):
            flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            index = build_index(*steps, 16, bits4)
            t_build = time.perf_counter() - t0
            flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt
            ns = {k: best_ns(index, hi, lo, args.repeat) for k, (hi, lo) in probes.items()}
            print(
                f"| {name} | {n4:,} | 2^{bits4} | {t_build * 1e3:.1f} | {flt:,} "
                f"| {index.nbytes / 2**20:.1f} | {ns['world']:.1f} | {ns['heavy']:.1f} |",
                flush=True,
            )
            del index


if __name__ == "__main__":
    main()
