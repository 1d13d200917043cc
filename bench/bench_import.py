"""Import throughput: ``flowatlas import`` next to the tools it builds on, in one run.

- nfcapd: ``flowatlas import`` of one nfcapd file of N records (real softflowd flows from
  ../shared/data, merged N/9705 times with ``nfdump -R DIR -w``) next to ``nfdump -r FILE -o
  csv`` alone (and the ``-o fmt:`` output flowatlas actually asks nfdump for);
- CSV: ``flowatlas import --format csv`` of the same N records written as CSV next to
  pyarrow's CSV reader alone (``pyarrow.csv.read_csv`` defaults: threads, type inference).

Each measurement is repeated (interleaved) and the median reported, in records per second.
Usage::

    python bench/bench_import.py [--records N] [--repeat R] [--results bench/RESULTS-import.md]

Needs nfdump (Debian package) and the shared data folder (FLOWATLAS_DATA).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from flowatlas.addresses import format_addresses
from flowatlas.io.commands import import_sources
from flowatlas.io.importers.nfdump import (
    FIELDS,
    nfdump_binary,
    nfdump_env,
    nfdump_version,
    summary_totals,
)
from flowatlas.testing import shared_data_dir, shared_data_missing

SOURCE = "flow_exports/generated_nfcapd/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng/nfcapd.202611250000"


def build_nfcapd(workdir: Path, records: int) -> tuple[Path, int]:
    """An nfcapd file of about ``records`` flows, merged from copies of a real one."""
    why = shared_data_missing(SOURCE)
    if why:
        raise SystemExit(f"bench_import: {why}")
    src = shared_data_dir() / SOURCE
    binary = nfdump_binary()
    per_file = summary_totals(binary, src)[0]
    copies = max(1, -(-records // per_file))
    indir = workdir / "copies"
    indir.mkdir()
    for i in range(copies):
        shutil.copy(src, indir / f"nfcapd.2026010100{i:04d}")
    big = workdir / "nfcapd.big"
    subprocess.run([binary, "-R", str(indir), "-w", str(big)], check=True, env=nfdump_env())
    shutil.rmtree(indir)
    return big, summary_totals(binary, big)[0]


def time_command(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=nfdump_env())
    return time.perf_counter() - t0


def time_import(path: Path, workdir: Path, **kw) -> float:
    out = Path(tempfile.mkdtemp(dir=workdir))
    t0 = time.perf_counter()
    summary = import_sources([path], out, jobs=1, progress=False, **kw)
    elapsed = time.perf_counter() - t0
    if summary.failed:
        raise SystemExit(f"bench_import: {summary.failed[0].error}")
    shutil.rmtree(out)
    return elapsed


def write_csv(archive_rows: pa.Table, path: Path) -> None:
    """The archive rows as a plain CSV: ISO times, text addresses, numbers."""
    text = pa.table(
        {
            "time_start": archive_rows["time_start"],
            "time_end": archive_rows["time_end"],
            "src_addr": pa.array(format_addresses(archive_rows["src_addr"])),
            "dst_addr": pa.array(format_addresses(archive_rows["dst_addr"])),
            "src_port": archive_rows["src_port"],
            "dst_port": archive_rows["dst_port"],
            "proto": archive_rows["proto"],
            "bytes": archive_rows["bytes"],
            "packets": archive_rows["packets"],
            "in_if": archive_rows["in_if"],
            "out_if": archive_rows["out_if"],
        }
    )
    pacsv.write_csv(text, path)


def median_rate(n: int, runs: list[float]) -> str:
    return f"{n / statistics.median(runs):,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--results", type=Path, help="append the results table to this file")
    args = ap.parse_args(argv)

    binary = nfdump_binary()
    version = ".".join(map(str, nfdump_version(binary)))
    fmt = "fmt:" + ",".join(tok for _, tok in FIELDS)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        big, n = build_nfcapd(work, args.records)
        archive = work / "archive"
        import_sources([big], archive, jobs=1, progress=False)
        rows = pq.read_table(archive)
        csv_path = work / "flows.csv"
        write_csv(rows, csv_path)
        csv_mib = csv_path.stat().st_size / 2**20

        cases: dict[str, Callable[[], float]] = {
            "nfcapd: nfdump -r FILE -o csv > /dev/null": lambda: time_command(
                [binary, "-r", str(big), "-o", "csv"]
            ),
            "nfcapd: nfdump -q -N -6 -o fmt:... (what flowatlas reads)": lambda: time_command(
                [binary, "-q", "-N", "-6", "-r", str(big), "-o", fmt]
            ),
            "nfcapd: flowatlas import (1 job, to Parquet)": lambda: time_import(big, work),
            "csv: pyarrow.csv.read_csv (defaults)": lambda: _timed(
                lambda: pacsv.read_csv(csv_path)
            ),
            "csv: pyarrow.csv.read_csv (text columns, 1 thread)": lambda: _timed(
                lambda: pacsv.read_csv(
                    csv_path,
                    read_options=pacsv.ReadOptions(use_threads=False),
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in rows.column_names}
                    ),
                )
            ),
            "csv: flowatlas import --format csv (1 job, to Parquet)": lambda: time_import(
                csv_path, work, fmt="csv"
            ),
        }
        runs: dict[str, list[float]] = {k: [] for k in cases}
        load_before = os.getloadavg()
        for _ in range(args.repeat):
            for name, fn in cases.items():
                runs[name].append(fn())
        load_after = os.getloadavg()

    cpu = _cpu_model()
    lines = [
        f"## Import throughput ({dt.date.today().isoformat()})",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"pyarrow {pa.__version__}, nfdump {version}. {n:,} records "
        f"(nfcapd {big.name}: real softflowd flows merged; CSV {csv_mib:.0f} MiB). "
        f"Median of {args.repeat} interleaved runs; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        "| case | records/s | median s |",
        "|---|---:|---:|",
    ]
    for name, times in runs.items():
        lines.append(f"| {name} | {median_rate(n, times)} | {statistics.median(times):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
