"""Import throughput: ``flowatlas import`` next to the tools it builds on, in one run.

- nfcapd: ``flowatlas import`` of one nfcapd file of N records (real softflowd flows from
  ../shared/data, merged N/9705 times with ``nfdump -R DIR -w``) next to ``nfdump -r FILE -o
  csv`` alone, and the ``-o fmt:`` output flowatlas actually asks nfdump for;
- CSV: ``flowatlas import --format csv`` of the same N records written as CSV next to
  pyarrow's CSV reader alone (``pyarrow.csv.read_csv`` with its defaults).

Every case is a command a user would run, measured as a child process with the shared
measuring stick (``bench/_common.py``: wall time and CPU time); Python's start-up is measured
too, so it can be told apart. Cases are interleaved and repeated; the median is reported.
(Peak memory per worker is about 0.5 to 0.9 GB at the default ``--batch-rows``, measured with
``/usr/bin/time -v``; mostly the allocator keeping freed blocks.) Usage::

    python bench/bench_import.py [--records N] [--repeat R] [--results FILE]

Needs nfdump (Debian package) and the shared data folder (FLOWATLAS_DATA).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from _common import (
    Measurement,
    git_revision,
    load_average,
    machine,
    markdown_table,
    rate,
    run_measured,
    versions,
    write_section,
)

from flowatlas.addresses import format_addresses
from flowatlas.io.commands import import_sources
from flowatlas.io.importers.nfdump import (
    FIELDS,
    nfdump_binary,
    nfdump_env,
    nfdump_version,
    summary_totals,
)
from flowatlas.testing import REPO_ROOT, shared_data_dir, shared_data_missing

SOURCE = "flow_exports/generated_nfcapd/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng/nfcapd.202611250000"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADING = "Import throughput (bench/bench_import.py)"


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


def shell(argv: list[str], out: Path) -> list[str]:
    """``argv > out`` through sh (the baselines print; their output goes to /dev/null)."""
    import shlex

    return ["sh", "-c", " ".join(shlex.quote(a) for a in argv) + f" > {shlex.quote(str(out))}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--results", type=Path, default=None, help=f"results file [{RESULTS}]")
    ap.add_argument("--no-results", action="store_true", help="print only")
    args = ap.parse_args(argv)

    binary = nfdump_binary()
    nf_version = ".".join(map(str, nfdump_version(binary)))
    fmt = "fmt:" + ",".join(tok for _, tok in FIELDS)
    py = sys.executable
    flowatlas = [py, "-m", "flowatlas"]
    env = nfdump_env()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        big, n = build_nfcapd(work, args.records)
        import_sources([big], work / "seed", jobs=1, progress=False)
        csv_path = work / "flows.csv"
        write_csv(pq.read_table(work / "seed"), csv_path)
        shutil.rmtree(work / "seed")
        csv_mib = csv_path.stat().st_size / 2**20
        null = Path("/dev/null")
        out = work / "out"

        cases: dict[str, list[str]] = {
            "python start-up (import flowatlas.io.commands)": [
                py,
                "-c",
                "import flowatlas.io.commands, flowatlas.io.importers",
            ],
            "nfcapd: nfdump -r FILE -o csv > /dev/null": shell(
                [binary, "-r", str(big), "-o", "csv"], null
            ),
            "nfcapd: nfdump -q -N -6 -r FILE -o fmt:... (what flowatlas reads)": shell(
                [binary, "-q", "-N", "-6", "-r", str(big), "-o", fmt], null
            ),
            "nfcapd: flowatlas import FILE -j 1 (to Parquet)": [
                *flowatlas,
                "import",
                str(big),
                "--out",
                str(out),
                "-j",
                "1",
                "-q",
            ],
            "csv: python -c pyarrow.csv.read_csv(FILE)": [
                py,
                "-c",
                f"import pyarrow.csv as c; c.read_csv({str(csv_path)!r})",
            ],
            "csv: flowatlas import FILE --format csv -j 1 (to Parquet)": [
                *flowatlas,
                "import",
                str(csv_path),
                "--format",
                "csv",
                "--out",
                str(out),
                "-j",
                "1",
                "-q",
            ],
        }
        runs: dict[str, list[Measurement]] = {k: [] for k in cases}
        load_before = load_average()
        for _ in range(args.repeat):
            for name, cmd in cases.items():
                shutil.rmtree(out, ignore_errors=True)
                runs[name].append(run_measured(cmd, env=env).check(name))
        load_after = load_average()

    rows = []
    for name, ms in runs.items():
        wall = statistics.median(m.seconds for m in ms)
        cpu = statistics.median(m.cpu_seconds for m in ms)
        start_up = name.startswith("python")
        rows.append(
            [
                name,
                "-" if start_up else rate(n, wall),
                "-" if start_up else rate(n, cpu),
                f"{wall:.2f}",
                f"{cpu:.2f}",
            ]
        )
    m = machine()
    v = versions("pyarrow", "numpy", "numba")
    body = "\n".join(
        [
            f"{n:,} flow records: an nfcapd file of real softflowd flows (merged copies of "
            f"`{Path(SOURCE).parent.name}`), and the same records as a {csv_mib:.0f} MiB CSV. "
            f"Median of {args.repeat} interleaved runs, each a child process.",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}, "
            f"Python {m['python']}; nfdump {nf_version}, pyarrow {v['pyarrow']}, "
            f"numpy {v['numpy']}, numba {v['numba']}; flowatlas {git_revision(REPO_ROOT)}. "
            f"Load average {load_before} before, {load_after} after (other work on the "
            "machine slows every case alike; compare rows, not runs).",
            "",
            markdown_table(
                ["case", "records/s", "records/CPU-s", "wall s", "CPU s"],
                rows,
            ),
            "",
            "records/s = records / median wall time, start-up included; records/CPU-s = "
            "records / CPU time of the process and its children (nfdump included), which "
            "moves less when other work shares the cores. Peak memory is not "
            "shown: the kernel's high-water mark of a forked child starts at the benchmark "
            "process's own size, which hides small tools' real peaks.",
        ]
    )
    print(f"## {HEADING}\n\n{body}")
    if not args.no_results:
        write_section(args.results or RESULTS, HEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
