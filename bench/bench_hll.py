"""Benchmark: HLL sketch updates/s (10^7 addresses into 10^4 cells), estimates, blobs, and
speed and accuracy next to datasketch (pure Python) and Apache DataSketches on the same data.

    python bench/bench_hll.py            # full: 10^7 addresses, 10^4 cells, best of 3
    python bench/bench_hll.py --quick    # smoke run (CI-sized)
    python bench/bench_hll.py --gpu      # also the CUDA driver on device-resident data

The libraries are optional (``pip install datasketch datasketches``); a missing one is
reported as such. They take one address per Python call, so their rates measure that call
as much as the sketch. Prints markdown tables; writes the "HLL sketches" section of
bench/RESULTS.md (other sections are left as they are).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, load_average, markdown_table, provenance, write_section

from flowatlas.kernels import hll, serial_kernels

HEADING = "HLL sketches"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
V4 = np.uint64(0xFFFF_0000_0000)
#: HLL++ switch thresholds (Heule et al. 2013), used here without its bias tables
HLLPP_THRESHOLD = {10: 900, 11: 1800, 12: 3100, 13: 6500, 14: 11500}


def addresses(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n distinct addresses, half IPv4-mapped (a permutation of 2^32), half random IPv6."""
    n4 = n // 2
    start = int(rng.integers(0, 2**32))
    v4 = (np.arange(n4, dtype=np.uint64) * np.uint64(2_654_435_761) + np.uint64(start)) & np.uint64(
        0xFFFF_FFFF
    )
    hi = np.concatenate(
        [np.zeros(n4, np.uint64), np.uint64(1 << 61) | rng.integers(0, 2**61, n - n4, np.uint64)]
    )
    lo = np.concatenate([V4 | v4, rng.integers(0, 2**63, n - n4, np.uint64)])
    order = rng.permutation(n)
    return hi[order], lo[order]


def as_bytes(hi: np.ndarray, lo: np.ndarray) -> list[bytes]:
    """Each address as its 16 network-order bytes (what the libraries are fed)."""
    pairs = np.stack([hi, lo], axis=1).astype(">u8")
    raw = pairs.tobytes()
    return [raw[16 * i : 16 * i + 16] for i in range(hi.size)]


def libraries(p: int) -> dict[str, tuple[Callable[[list[bytes]], object], Callable]]:
    """name -> (build a sketch from a list of 16-byte addresses, its estimate)."""
    out: dict[str, tuple[Callable[[list[bytes]], object], Callable]] = {}
    try:
        from datasketch import HyperLogLog

        def build_ds(items: list[bytes]) -> object:
            s = HyperLogLog(p=p)
            for b in items:
                s.update(b)
            return s

        def count_ds(s: HyperLogLog) -> float:
            with warnings.catch_warnings():  # "close to error correction threshold" (2.5 m)
                warnings.simplefilter("ignore", UserWarning)
                return s.count()

        out[f"datasketch HyperLogLog (p={p}, SHA-1 32-bit)"] = (build_ds, count_ds)
    except ImportError:
        pass
    try:
        from datasketches import hll_sketch, tgt_hll_type

        def build_ad(items: list[bytes]) -> object:
            s = hll_sketch(p, tgt_hll_type.HLL_8)
            for b in items:
                s.update(b.hex())  # its Python API takes int, float or str
            return s

        out[f"Apache DataSketches hll_sketch (lg_k={p}, HLL_8)"] = (
            build_ad,
            lambda s: s.get_estimate(),
        )
    except ImportError:
        pass
    return out


def speed(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    rng = np.random.default_rng(1)
    p, n, cells, repeat = args.p, args.n, args.cells, args.repeat
    hi, lo = addresses(rng, n)
    keys = rng.integers(0, cells, n).astype(np.int64)
    hll.update(keys[:1000], hi[:1000], lo[:1000], cells, p)  # compile outside the clock
    rows: list[list[str]] = []

    def row(what: str, seconds: float, count: float, unit: str = "addresses/s") -> None:
        rows.append([what, f"{seconds:.3g}", f"{count / seconds:.3g} {unit}"])

    regs = hll.update(keys, hi, lo, cells, p)
    t = best_of(lambda: hll.update(keys, hi, lo, cells, p), repeat)
    c = best_of(lambda: hll.update(keys, hi, lo, cells, p), repeat, time.process_time)
    row(f"update, dense, {numba.get_num_threads()} threads ({n / c:.3g} per CPU-second)", t, n)
    with serial_kernels():
        t = best_of(lambda: hll.update(keys, hi, lo, cells, p), repeat)
        c = best_of(lambda: hll.update(keys, hi, lo, cells, p), repeat, time.thread_time)
    row(f"update, dense, 1 thread ({n / c:.3g} per CPU-second)", t, n)
    k, e = hll.sparse_update(keys, hi, lo, p)
    row(
        "sparse_update (long form, sorted)",
        best_of(lambda: hll.sparse_update(keys, hi, lo, p), repeat),
        n,
    )
    row(
        f"estimate {cells:,} dense sketches",
        best_of(lambda: hll.estimate(regs), repeat),
        cells,
        "sketches/s",
    )
    t = best_of(lambda: hll.estimate_sparse(k, e, cells, p), repeat)
    row(f"estimate_sparse {cells:,} sketches", t, cells, "sketches/s")
    row(
        f"merge {cells:,} + {cells:,} dense sketches",
        best_of(lambda: hll.merge(regs, regs), repeat),
        cells,
        "sketches/s",
    )
    offsets, data = hll.encode_cells(k, e, cells, p)
    dense = int((np.bincount(k, minlength=cells) > hll.default_sparse_max(p)).sum())
    t = best_of(lambda: hll.encode_cells(k, e, cells, p), repeat)
    row(f"encode_cells ({data.size / cells:,.0f} B/cell, {dense:,} dense)", t, cells, "cells/s")
    row(
        "decode_cells",
        best_of(lambda: hll.decode_cells(offsets, data, p), repeat),
        cells,
        "cells/s",
    )

    sub = min(args.lib_n, n)
    items = as_bytes(hi[:sub], lo[:sub])
    one = np.zeros(sub, np.int64)
    t = best_of(lambda: hll.update(one, hi[:sub], lo[:sub], 1, p), repeat)
    row(f"flowatlas: update, one sketch, {sub:,} addresses", t, sub)
    sketch = hll.update(one, hi[:sub], lo[:sub], 1, p)
    row(
        "flowatlas: estimate one sketch",
        best_of(lambda: hll.estimate(sketch), repeat),
        1,
        "sketches/s",
    )
    for name, (build, est) in libraries(p).items():
        row(
            f"{name}: update, one sketch, {sub:,} addresses",
            best_of(lambda b=build: b(items), 1),
            sub,
        )
        sketch = build(items)
        row(
            f"{name}: estimate one sketch",
            best_of(lambda f=est, s=sketch: f(s), repeat),
            1,
            "sketches/s",
        )

    if args.gpu:
        from numba import cuda

        from flowatlas.kernels.cuda import hll_update_cuda

        d = [cuda.to_device(a) for a in (keys, hi, lo)]
        same = bool((hll_update_cuda(*d, cells, p).copy_to_host() == regs).all())

        def run() -> None:
            hll_update_cuda(*d, cells, p)
            cuda.synchronize()

        row(f"update on the GPU, device-resident (equals CPU: {same})", best_of(run, 5), n)

    say(
        f"Speed: {n:,} addresses (half IPv4-mapped, half IPv6) into {cells:,} cells, p = {p}, "
        f"best of {repeat}; libraries on the first {sub:,} addresses.\n"
    )
    say(markdown_table(["operation", "seconds", "rate"], rows))


def accuracy(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """Relative error of each estimator on the same sets: mean |error| over trials."""
    p = args.p
    rng = np.random.default_rng(2)
    libs = libraries(p)
    rows = []
    for n in args.sizes:
        trials = args.trials if n <= args.lib_n else 1
        errs: dict[str, list[float]] = {"flowatlas": []}
        for _ in range(trials):
            hi, lo = addresses(rng, n)
            e = float(hll.estimate(hll.update(np.zeros(n, np.int64), hi, lo, 1, p))[0])
            errs["flowatlas"].append(e / n - 1)
            if n <= args.lib_n:
                items = as_bytes(hi, lo)
                for name, (build, est) in libs.items():
                    errs.setdefault(name, []).append(est(build(items)) / n - 1)
        rows.append(
            [f"{n:,}", trials]
            + [
                f"{100 * np.mean(np.abs(errs[k])):.2f} % ({100 * np.mean(errs[k]):+.2f} %)"
                if k in errs
                else "-"
                for k in ["flowatlas", *libs]
            ]
        )
    say(f"\nAccuracy: mean |relative error| (mean signed error) over the trials, p = {p} "
        f"(standard error 1.04/sqrt(m) = {100 * hll.standard_error(p):.2f} %); the same "
        "addresses for every column.\n")  # fmt: skip
    say(markdown_table(["distinct addresses", "trials", "flowatlas", *libs], rows))


def estimators(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """Bias and spread of the three standard choices, from the same registers."""
    p = args.p
    m = 1 << p
    rng = np.random.default_rng(3)
    rows = []
    for ratio in (0.1, 0.5, 1, 2, 2.5, 3, 4, 5, 10):
        n = int(ratio * m)
        keys = np.repeat(np.arange(args.study_trials), n)
        hi, lo = addresses(rng, keys.size)
        regs = hll.update(keys, hi, lo, args.study_trials, p)
        improved = hll.estimate(regs)
        classic = hll.estimate(regs, method="classic")
        zeros = (regs == 0).sum(axis=1)
        raw = hll.alpha(m) * m * m / np.exp2(-regs.astype(np.float64)).sum(axis=1)
        with np.errstate(divide="ignore"):
            lc = m * np.log(m / np.maximum(zeros, 1))
        hllpp = np.where((zeros > 0) & (lc <= HLLPP_THRESHOLD.get(p, 2.5 * m)), lc, raw)
        row = [f"{ratio:g} m ({n:,})"]
        for est in (improved, classic, hllpp):
            err = est / n - 1
            row.append(f"{100 * err.mean():+.2f} % / {100 * math.sqrt((err**2).mean()):.2f} %")
        rows.append(row)
    say(f"\nEstimators: bias / RMS relative error over {args.study_trials} sketches per size, "
        f"p = {p}, on the same registers.\n")  # fmt: skip
    say(markdown_table(
        ["n", "improved (Ertl 2017, used)", "classic (LC below 2.5 m)",
         "HLL++ thresholds, no bias tables"],
        rows,
    ))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="addresses for the speed runs")
    ap.add_argument("--cells", type=int, default=10_000)
    ap.add_argument("--p", type=int, default=hll.DEFAULT_P)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lib-n", type=int, default=1_000_000, help="addresses fed to libraries")
    ap.add_argument("--trials", type=int, default=5, help="accuracy trials per size")
    ap.add_argument("--study-trials", type=int, default=200, help="sketches per estimator size")
    ap.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    ap.add_argument("--gpu", action="store_true", help="also time the CUDA driver")
    ap.add_argument("--results", default=None, help=f"write a section into this file [{RESULTS}]")
    args = ap.parse_args()
    args.sizes = [1, 10, 100, 1000, 10_000, 100_000, 1_000_000, 10_000_000]
    if args.quick:
        args.n, args.cells, args.repeat, args.lib_n = 200_000, 100, 1, 2000
        args.trials, args.study_trials, args.sizes = 2, 4, [10, 1000, 10_000]

    report: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        report.append(line)

    load_before = load_average()
    speed(args, say)
    accuracy(args, say)
    estimators(args, say)

    if args.results or not args.quick:
        body = "\n".join(
            [
                "CPU drivers of flowatlas/kernels/hll.py. On a shared machine wall-time rates "
                "vary with the load (below); rates per CPU-second are steadier.",
                "",
                *report,
                "",
                *provenance(
                    ("numba", "numpy", "datasketch", "datasketches"),
                    load_before,
                    "pip install datasketch datasketches && python bench/bench_hll.py",
                ),
            ]
        )
        write_section(args.results or RESULTS, HEADING, body)


if __name__ == "__main__":
    main()
