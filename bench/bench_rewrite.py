"""What ``flowatlas rewrite`` costs: whole runs on a copy of an archive, and where one file's
CPU goes.

Runs: the archive is copied into ``--work`` (never rewritten where it lies: benchmark
archives are shared and hard-linked), then ``flowatlas rewrite`` runs on the copy, the codecs
of ``--codecs`` taking turns (each run rewrites every file), ``--repeat`` rounds; wall and CPU
seconds (the command and its worker processes, from ``/usr/bin/time``-like rusage) and the
1-minute load when each run started. Then a second run in the last codec (every file skipped).

Phases (``--phases``): one file of the copy rewritten in this process with one Arrow thread,
each step's CPU time: reading the old row groups, their CRC-32 digests, writing, reading the
new file back and its digests (what :func:`flowatlas.io.rewrite.rewrite_file` does, step by
step), for each codec of ``--codecs``.

    python bench/bench_rewrite.py --archive /work/slice100m --work /tmp/rw --codecs lz4,zstd
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flowatlas.io.archive import open_parquet, writer_options
from flowatlas.io.rewrite import _digest


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(archive: Path, codec: str) -> tuple[float, float, str]:
    """(wall s, CPU s, summary line) of one ``flowatlas rewrite`` of ``archive``."""
    cmd = [sys.executable, "-m", "flowatlas", "rewrite", str(archive), "--compression", codec]
    cpu0, t0 = children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, children_cpu() - cpu0, out.strip().splitlines()[0]


def phases(path: Path, codec: str) -> dict[str, float]:
    """CPU seconds of each step of rewriting ``path`` in ``codec`` (one Arrow thread)."""
    acc = dict.fromkeys(("read", "digest", "write", "read back", "digest back"), 0.0)

    def timed(step: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, its CPU seconds added to ``acc[step]``."""
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        out = fn(*args)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        acc[step] += r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        return out

    tmp = path.with_name(f".{path.name}.bench.tmp")
    pf = open_parquet(path)
    try:
        with pq.ParquetWriter(tmp, pf.schema_arrow, **writer_options(codec)) as w:
            for i in range(pf.num_row_groups):
                table = timed("read", pf.read_row_group, i)
                timed("digest", _digest, table)
                timed("write", w.write_table, table, table.num_rows)
        back = open_parquet(tmp)
        for i in range(back.num_row_groups):
            timed("digest back", _digest, timed("read back", back.read_row_group, i))
    finally:
        tmp.unlink(missing_ok=True)
    return acc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archive", type=Path, required=True, help="archive to copy (not written)")
    ap.add_argument("--work", type=Path, required=True, help="folder for the copy (removed)")
    ap.add_argument("--codecs", default="lz4,zstd", help="codecs taking turns (comma-separated)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the codecs")
    ap.add_argument("--phases", action="store_true", help="also one file's steps, by codec")
    args = ap.parse_args(argv)
    codecs = args.codecs.split(",")
    copy = args.work / args.archive.name
    shutil.rmtree(copy, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(args.archive, copy, ignore=shutil.ignore_patterns("_import"))
    files = sorted(copy.glob("day=*/*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    print(f"{copy}: {len(files)} files, {rows:,} records, pyarrow {pa.__version__}")
    print("| to | load | wall s | CPU s | ns a record (CPU) |\n|---|---|---|---|---|")
    try:
        for _ in range(args.repeat):
            for codec in codecs:
                load = os.getloadavg()[0]
                wall, cpu, _line = run(copy, codec)
                print(f"| {codec} | {load:.1f} | {wall:.1f} | {cpu:.1f} | {1e9 * cpu / rows:.0f} |")
        wall, cpu, line = run(copy, codecs[-1])
        print(f"second run in {codecs[-1]}: {wall:.2f} s wall, {cpu:.2f} CPU s ({line})")
        if args.phases:
            pa.set_cpu_count(1)
            pa.set_io_thread_count(1)
            n = pq.ParquetFile(files[0]).metadata.num_rows
            print(f"\none file ({files[0].relative_to(copy)}, {n:,} records), ns a record")
            print("| codec | " + " | ".join(phases(files[0], codecs[0])) + " | all |")
            print("|---" * 7 + "|")
            for codec in codecs:
                acc = phases(files[0], codec)
                cells = " | ".join(f"{1e9 * v / n:.0f}" for v in acc.values())
                print(f"| {codec} | {cells} | {1e9 * sum(acc.values()) / n:.0f} |")
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
