"""Benchmark: LPM lookups/s (IPv4, IPv6; uniform and skewed addresses) and compile time, on
IPFire's full libloc table (1.29 M prefixes, ../shared/data), next to pytricia in the same run.

    python bench/bench_lpm.py            # full: 2x10^7 addresses per case, best of 3
    python bench/bench_lpm.py --quick    # smoke run (CI-sized)
    python bench/bench_lpm.py --gpu      # also the CUDA driver on device-resident data

Per-core rates come from the serial driver (one thread); the parallel driver uses every core
numba is given. Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, load_average, machine, provenance, write_section

from flowatlas.classify.compiler import _cidr_lengths, compile_layers
from flowatlas.classify.sources import read_source
from flowatlas.classify.table import PrefixTable, default_bits6
from flowatlas.kernels.lpm import build_index, lookup_cpu
from flowatlas.testing import shared_data_dir

LIBLOC = "prefix2asn/libloc_ipfire"
HEADING = "LPM lookups and prefix-table compile"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def workloads(rng: np.random.Generator, n: int, layers) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Uniform IPv4; IPv6 uniform inside routed prefixes; skewed (Zipf over 10^5 hosts)."""
    v4_hi = np.zeros(n, np.uint64)
    v4_lo = np.uint64(0xFFFF00000000) | rng.integers(0, 2**32, n, dtype=np.uint64)
    six = layers[1]
    pick = rng.integers(0, len(six), n)
    s_hi, e_hi = six.start_hi[pick], six.end_hi[pick]
    v6_hi = s_hi | (rng.integers(0, 2**63, n, dtype=np.uint64) & (e_hi ^ s_hi))
    v6_lo = rng.integers(0, 2**63, n, dtype=np.uint64)

    def skewed(hi, lo):
        hosts = min(100_000, n)
        ranks = np.minimum(rng.zipf(1.2, n), hosts) - 1
        return hi[:hosts][ranks], lo[:hosts][ranks]

    return {
        "IPv4 uniform": (v4_hi, v4_lo),
        "IPv4 skewed": skewed(v4_hi, v4_lo),
        "IPv6 uniform (routed)": (v6_hi, v6_lo),
        "IPv6 skewed": skewed(v6_hi, v6_lo),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="addresses per case [2x10^7]")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pytricia-n", type=int, default=500_000)
    ap.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    ap.add_argument("--gpu", action="store_true", help="also time the CUDA driver")
    ap.add_argument("--results", default=None, help=f"write a section into this file [{RESULTS}]")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeat, args.pytricia_n = args.n or 200_000, 1, 20_000
    args.n = args.n or 20_000_000

    root = shared_data_dir()
    files = [root / LIBLOC / f"libloc-prefix2as-v{v}.tsv.gz" for v in (4, 6)]
    if not all(f.exists() for f in files):
        raise SystemExit(f"needs {LIBLOC} under {root} (set FLOWATLAS_DATA)")

    mach = machine()
    load_before = load_average()
    report: list[str] = []

    def say(line: str = "") -> None:
        print(line)
        report.append(line)

    print(f"machine: {mach['cpu']}, {mach['cores']}; load {load_before}")
    t0 = time.perf_counter()
    layers = [read_source(f, "libloc")[0] for f in files]
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    c = compile_layers(layers)
    t_compile = time.perf_counter() - t0
    bits6 = default_bits6(c.starts_hi, c.starts_lo)  # as `flowatlas classify compile` does
    table = PrefixTable(c.starts_hi, c.starts_lo, c.values, c.networks, {"bits6": bits6})
    build_index(table.starts_hi[:2], table.starts_lo[:2], table.values[:2])  # jit warm-up
    t0 = time.perf_counter()
    index = table.index
    t_index = time.perf_counter() - t0
    n_prefixes = sum(len(x) for x in layers)
    say(
        f"table: {n_prefixes:,} prefixes -> {table.starts_hi.size:,} intervals, "
        f"{table.networks.num_rows:,} networks; index {index.stats()}"
    )
    say(
        f"compile: read+parse {t_read:.2f} s, compile {t_compile:.2f} s, index {t_index:.2f} s "
        f"(total {t_read + t_compile + t_index:.2f} s)"
    )

    rng = np.random.default_rng(1)
    cases = workloads(rng, args.n, layers)
    try:
        import pytricia
    except ImportError:
        pytricia = None
    trie = None
    if pytricia is not None:
        from flowatlas.addresses import hilo_to_text

        trie = pytricia.PyTricia(128)
        t0 = time.perf_counter()
        for layer in layers:
            texts = hilo_to_text(layer.start_hi, layer.start_lo).to_pylist()
            lengths = _cidr_lengths(layer.start_hi, layer.start_lo, layer.end_hi, layer.end_lo)
            for i, (t, ln) in enumerate(zip(texts, lengths.tolist(), strict=True)):
                trie[f"::ffff:{t}/{ln}" if "." in t else f"{t}/{ln}"] = i
        say(f"pytricia: {n_prefixes:,} prefixes loaded in {time.perf_counter() - t0:.1f} s")

    rows = []
    for name, (hi, lo) in cases.items():
        lookup_cpu(index, hi[:100_000], lo[:100_000], parallel=False)
        lookup_cpu(index, hi, lo, parallel=True)
        serial = args.n / best_of(
            lambda h=hi, l=lo: lookup_cpu(index, h, l, parallel=False), args.repeat
        )
        per_core = args.n / best_of(
            lambda h=hi, l=lo: lookup_cpu(index, h, l, parallel=False),
            args.repeat,
            time.thread_time,
        )
        par = args.n / best_of(
            lambda h=hi, l=lo: lookup_cpu(index, h, l, parallel=True), args.repeat
        )
        tri = float("nan")
        if trie is not None:
            from flowatlas.addresses import hilo_to_text

            m = args.pytricia_n
            keys = [
                f"::ffff:{t}" if "." in t else t for t in hilo_to_text(hi[:m], lo[:m]).to_pylist()
            ]
            get = trie.get
            tri = m / best_of(lambda k=keys, g=get: [g(x) for x in k], 1)
        rows.append((name, serial, per_core, par, tri))

    say()
    say(
        "| addresses | 1 thread, wall M/s | 1 thread, per CPU-second M/s | all cores M/s "
        "| pytricia M/s | 1 thread vs pytricia |"
    )
    say("|---|---:|---:|---:|---:|---:|")
    for name, s, c, p, t in rows:
        say(
            f"| {name} | {s / 1e6:.1f} | {c / 1e6:.1f} | {p / 1e6:.1f} | {t / 1e6:.2f} "
            f"| {s / t:.0f}x |"
        )

    if args.gpu:
        from numba import cuda

        from flowatlas.kernels.lpm import lookup_cuda

        dev = index.to_device()
        say()
        say("| addresses (GPU, device-resident) | lookups/s |")
        say("|---|---:|")
        for name, (hi, lo) in cases.items():
            d_hi, d_lo = cuda.to_device(hi), cuda.to_device(lo)
            out = cuda.device_array(hi.size, np.int32)
            lookup_cuda(dev, d_hi, d_lo, out)
            cuda.synchronize()
            best = float("inf")
            for _ in range(max(args.repeat, 5)):
                t0 = time.perf_counter()
                lookup_cuda(dev, d_hi, d_lo, out)
                cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            ok = out.copy_to_host()[:100_000] == lookup_cpu(index, hi[:100_000], lo[:100_000])
            say(f"| {name} | {hi.size / best:.3e} (matches CPU: {bool(ok.all())}) |")

    if args.results or not args.quick:
        body = "\n".join(
            [
                "Table: IPFire libloc (Debian libloc-database 2022-10-29), IPv4 + IPv6, from "
                "../shared/data; addresses per case: "
                f"{args.n:,} (pytricia: {args.pytricia_n:,}), best of {args.repeat}.",
                "Per CPU-second: addresses / this thread's CPU time, which time-slicing by other "
                "work on a shared machine does not inflate (cache and memory sharing still count).",
                "",
                *report,
                "",
                *provenance(
                    ("numba", "numpy", "pyarrow", "pytricia"),
                    load_before,
                    "python bench/bench_lpm.py",
                ),
                "- on a CUDA machine, `python bench/bench_lpm.py --gpu` adds the GPU rows",
            ]
        )
        write_section(args.results or RESULTS, HEADING, body)


if __name__ == "__main__":
    main()
