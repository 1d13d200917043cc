"""The archive's column layout, chosen by measurement: codec and encoding per column.

A build spends about a third of its CPU reading Parquet (issue 15), and nearly all of that
is decompression: an uncompressed column decodes in about 1 ns a record. This measures every
column of flow schema v1 (those a build reads and those other tools query) under each
layout pyarrow can write:

- codec: zstd, lz4 (LZ4_RAW), none;
- encoding: PLAIN, DICTIONARY, DELTA_BINARY_PACKED (integers and times), BYTE_STREAM_SPLIT,
  DELTA_BYTE_ARRAY (the 16-byte addresses), where pyarrow allows it;

and reports, per column, bytes a record on disk and one thread's CPU nanoseconds a record to
read it back (page checksums verified, as every reader here does), best of ``--repeat``.
Samples: the first ``--rows`` records of each archive (files in order, so times stay in
order within a day), written in row groups of the archive's own size. Archives: the
synthetic "world" and "heavy" ones and real flows (every nfcapd file under
``/work/shared/data/flow_exports``, imported once into ``--work``).

Then a line per whole layout (zstd, lz4, none, and the archive's ``auto``, see
:func:`flowatlas.io.archive.writer_options`): bytes a record of all columns, read ns of the
build's nine and of all fifteen; and with ``--builds`` the whole-build CPU of each archive
copied file by file into each layout (same rows, row groups and checksums), the copies built
in turn ``--repeat`` times (CPU seconds of the process tree, which contention distorts
least).

    python bench/bench_codec.py                              # world, heavy, real: columns
    python bench/bench_codec.py --builds --repeat 3          # plus whole builds
    python bench/bench_codec.py --smoke                      # small sample, one run

Writes its section of bench/RESULTS.md unless ``--no-write`` (or ``--results FILE``).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, markdown_table, provenance, write_section

from flowatlas.io.archive import COMPRESSIONS, open_parquet, writer_options
from flowatlas.schema import COLUMNS, FLOW_SCHEMA_V1

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SHARED_DATA = Path("/work/shared/data")
#: the columns a build reads (engine/pipeline's map tasks)
BUILD_COLUMNS = (
    "time_start", "exporter", "in_if", "out_if", "src_addr", "dst_addr", "bytes", "packets",
    "sampling_rate",
)  # fmt: skip
CODECS = ("zstd", "lz4", "none")
INT_ENCODINGS = ("PLAIN", "DICTIONARY", "DELTA_BINARY_PACKED", "BYTE_STREAM_SPLIT")
ADDRESS_ENCODINGS = ("PLAIN", "DICTIONARY", "BYTE_STREAM_SPLIT", "DELTA_BYTE_ARRAY")


def encodings_of(typ: pa.DataType) -> tuple[str, ...]:
    """The encodings worth trying for a column of Arrow type ``typ``."""
    return ADDRESS_ENCODINGS if pa.types.is_fixed_size_binary(typ) else INT_ENCODINGS


def column_options(name: str, codec: str, encoding: str) -> dict[str, object]:
    """ParquetWriter settings for one column ``name`` in ``codec`` and ``encoding``."""
    opts: dict[str, object] = {
        "compression": codec,
        "write_statistics": True,
        "write_page_checksum": True,
    }
    if encoding == "DICTIONARY":
        opts["use_dictionary"] = [name]
    else:
        opts["use_dictionary"] = False
        opts["column_encoding"] = {name: encoding}
    return opts


def to_bytes(table: pa.Table, row_group_rows: int, **opts: object) -> bytes:
    """``table`` as one Parquet file in memory."""
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, table.schema, **opts) as w:
        w.write_table(table, row_group_size=row_group_rows)
    return buf.getvalue()


def read_ns(data: bytes, columns: list[str], repeat: int) -> tuple[float, pa.Table]:
    """One thread's best CPU seconds to read ``columns`` of the file ``data`` (page
    checksums verified), and the table read."""
    best = float("inf")
    table = None
    for _ in range(repeat):
        t0 = time.thread_time()
        table = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True).read(
            columns=columns, use_threads=False
        )
        best = min(best, time.thread_time() - t0)
    assert table is not None
    return best, table


# --------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """The first records of an archive, and the size of its row groups."""

    name: str
    table: pa.Table
    row_group_rows: int


def sample(name: str, archive: Path, rows: int, whole: bool = False) -> Sample:
    """The first ``rows`` records of ``archive`` (its files in order), v1 columns only, in
    row groups of the archive's median size (``whole``: of up to 2^20 rows, as a busy day's
    file is written: the real flows' archive holds small files of single captures)."""
    tables, got, groups = [], 0, []
    for path in sorted(archive.glob("day=*/*.parquet")):
        pf = open_parquet(path)
        groups += [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        t = pf.read(columns=list(COLUMNS))
        tables.append(t)
        got += t.num_rows
        if got >= rows:
            break
    table = pa.concat_tables(tables).slice(0, rows).combine_chunks()
    table = table.cast(FLOW_SCHEMA_V1)
    group = table.num_rows if whole else int(np.median(groups))
    return Sample(name, table, max(1, min(group, 1 << 20)))


def real_archive(work: Path) -> Path:
    """Every real nfcapd file under the shared data, imported once into ``work/real``."""
    out = work / "real"
    if not (out / "day=").parent.exists() or not any(out.glob("day=*/*.parquet")):
        files = sorted(str(p) for p in (SHARED_DATA / "flow_exports").rglob("nfcapd.2*"))
        subprocess.run(
            [sys.executable, "-m", "flowatlas", "import", *files, "--format", "nfcapd",
             "-o", str(out), "--compression", "zstd", "-q"],
            check=True, stderr=subprocess.DEVNULL,  # its set-up warnings: no configuration
        )  # fmt: skip
    return out


# --------------------------------------------------------------------------- per column


@dataclass
class Cell:
    column: str
    codec: str
    encoding: str
    bytes_per_record: float
    ns_per_record: float


def measure_columns(s: Sample, repeat: int) -> list[Cell]:
    """Every column of ``s`` in every layout: size and read time a record."""
    out = []
    n = s.table.num_rows
    for name in COLUMNS:
        one = s.table.select([name])
        for enc in encodings_of(one.schema.field(0).type):
            for codec in CODECS:
                try:
                    data = to_bytes(one, s.row_group_rows, **column_options(name, codec, enc))
                except (pa.ArrowException, ValueError):
                    continue  # pyarrow cannot write this column in this encoding
                seconds, back = read_ns(data, [name], repeat)
                if not back.equals(one):
                    raise AssertionError(f"{s.name}: {name} {enc} {codec} read back differs")
                out.append(Cell(name, codec, enc, len(data) / n, seconds / n * 1e9))
    return out


def column_table(cells: list[Cell], auto: dict[str, tuple[str, str]]) -> str:
    """One row per column and encoding: bytes / ns a record under each codec; the auto
    layout's cell marked with ``*``."""
    rows = []
    for name in COLUMNS:
        mine = [c for c in cells if c.column == name]
        for i, enc in enumerate(dict.fromkeys(c.encoding for c in mine)):
            row: list[object] = ["" if i else name, enc]
            for codec in CODECS:
                c = next((c for c in mine if c.encoding == enc and c.codec == codec), None)
                mark = "*" if auto.get(name) == (codec, enc) else ""
                row.append(f"{c.bytes_per_record:.2f} / {c.ns_per_record:.1f}{mark}" if c else "-")
            rows.append(row)
    return markdown_table(["column", "encoding", *(f"{c}: B / ns" for c in CODECS)], rows)


def auto_layout() -> dict[str, tuple[str, str]]:
    """The auto layout, per column: (codec, encoding); empty in a checkout without one."""
    import flowatlas.io.archive as archive

    return dict(getattr(archive, "AUTO_LAYOUT", {}))


# --------------------------------------------------------------------------- whole layouts


def layout_names() -> list[str]:
    """The archive's layouts: its uniform codecs and auto (where this checkout has it)."""
    return list(COMPRESSIONS)


def measure_layouts(s: Sample, repeat: int) -> list[list[object]]:
    """Each whole layout on ``s``: bytes a record, read ns of the build's columns and of
    all columns, and that every layout reads back the same table."""
    rows = []
    for layout in layout_names():
        data = to_bytes(s.table, s.row_group_rows, **writer_options(layout))
        n = s.table.num_rows
        nine, back9 = read_ns(data, list(BUILD_COLUMNS), repeat)
        every, back = read_ns(data, list(COLUMNS), repeat)
        if not back.equals(s.table) or not back9.equals(s.table.select(list(BUILD_COLUMNS))):
            raise AssertionError(f"{s.name}: layout {layout} reads back other values")
        rows.append([s.name, layout, f"{len(data) / n:.2f}", f"{nine / n * 1e9:.1f}",
                     f"{every / n * 1e9:.1f}"])  # fmt: skip
    return rows


def copy_archive(src: Path, dst: Path, layout: str) -> int:
    """``src``'s files rewritten into ``dst`` in ``layout`` (same rows, row groups, metadata,
    checksums); its ``.fatable`` / ``.bounds.parquet`` siblings copied; bytes written."""
    if dst.exists():
        shutil.rmtree(dst)
    total = 0
    for path in sorted(src.rglob("*.parquet")):
        rel = path.relative_to(src)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        pf = pq.ParquetFile(path)
        groups = max(1, pf.metadata.row_group(0).num_rows) if pf.metadata.num_row_groups else 1
        with pq.ParquetWriter(out, pf.schema_arrow, **writer_options(layout)) as w:
            for i in range(pf.metadata.num_row_groups):
                w.write_table(pf.read_row_group(i), row_group_size=groups)
        total += out.stat().st_size
    for extra in src.iterdir():
        if extra.is_file():
            shutil.copy(extra, dst / extra.name)
    marker = dst / "_synth.json"
    if marker.exists():  # it says the layout the copy's files are in
        meta = json.loads(marker.read_text())
        marker.write_text(json.dumps({**meta, "compression": layout}, indent=1))
    for suffix in (".fatable", ".bounds.parquet"):
        sib = src.with_name(src.name + suffix)
        if sib.exists():
            shutil.copy(sib, dst.with_name(dst.name + suffix))
    return total


def build_cpu(archive: Path, out: Path) -> tuple[float, float]:
    """``flowatlas build`` of ``archive`` as a user runs it: (wall s, CPU s of its tree)."""
    argv = [sys.executable, "-m", "flowatlas", "build", str(archive), "-o", str(out), "-q",
            "--overwrite"]  # fmt: skip
    table = archive.with_name(archive.name + ".fatable")
    if table.exists():
        argv += ["--table", str(table)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure_builds(
    name: str, src: Path, work: Path, repeat: int, layouts: list[str]
) -> list[list[object]]:
    """Whole builds of ``src`` copied into each layout, alternated ``repeat`` times."""
    copies = {}
    for layout in layouts:
        dst = work / f"{name}-{layout}" / src.name
        size = copy_archive(src, dst, layout)
        copies[layout] = (dst, size)
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in layouts}
    for _ in range(repeat):
        for layout in layouts:
            runs[layout].append(build_cpu(copies[layout][0], work / f"cube-{name}-{layout}"))
    rows = []
    for layout in layouts:
        cpu = sorted(c for _, c in runs[layout])
        wall = sorted(w for w, _ in runs[layout])
        rows.append([name, layout, f"{copies[layout][1] / 1e6:.0f}",
                     ", ".join(f"{c:.2f}" for c in cpu), f"{wall[0]:.2f}"])  # fmt: skip
    for layout in layouts:
        shutil.rmtree(copies[layout][0].parent, ignore_errors=True)
        shutil.rmtree(work / f"cube-{name}-{layout}", ignore_errors=True)
    return rows


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        default=HERE / "_data",
        help="folder of the bench archives (synth-r5000000-d184-s1, heavy-r5000000-s1)",
    )
    p.add_argument(
        "--archives",
        nargs="+",
        default=["world", "heavy", "real"],
        help="samples: world, heavy, real, or paths of archives",
    )
    p.add_argument("--rows", type=int, default=1 << 20, help="records of each sample")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/bench-codec"),
        help="scratch folder (the real flows' archive, the build copies)",
    )
    p.add_argument(
        "--builds",
        action="store_true",
        help="also build world and heavy 5 M copied into each layout",
    )
    p.add_argument("--smoke", action="store_true", help="64 k records, one run, no builds")
    p.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    p.add_argument("--results", type=Path, default=RESULTS)
    return p.parse_args(argv)  # fmt: skip


def archive_of(name: str, args: argparse.Namespace) -> Path:
    """The archive a sample name stands for."""
    if name == "world":
        return args.data / "synth-r5000000-d184-s1"
    if name == "heavy":
        return args.data / "heavy-r5000000-s1"
    if name == "real":
        return real_archive(args.work)
    return Path(name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.rows, args.repeat, args.builds, args.no_write = 1 << 16, 1, False, True
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    auto = auto_layout()
    parts = []
    layout_rows: list[list[object]] = []
    build_rows: list[list[object]] = []
    for name in args.archives:
        archive = archive_of(name, args)
        label = name if name in ("world", "heavy", "real") else archive.name
        s = sample(label, archive, args.rows, whole=name == "real")
        cells = measure_columns(s, args.repeat)
        parts.append(
            f"**{s.name}** ({archive.name}: {s.table.num_rows:,} records, row groups of "
            f"{s.row_group_rows:,}); bytes / one thread's read ns a record, `*` = auto:\n\n"
            + column_table(cells, auto)
        )
        print(parts[-1] + "\n", flush=True)
        layout_rows += measure_layouts(s, args.repeat)
    layouts_md = markdown_table(
        ["sample", "layout", "B a record", "read ns, build's 9 columns", "read ns, all 15"],
        layout_rows,
    )
    print(layouts_md + "\n", flush=True)
    body = "\n\n".join(parts) + "\n\nWhole layouts (all columns in one file):\n\n" + layouts_md
    if args.builds:
        for name in ("world", "heavy"):
            build_rows += measure_builds(
                name, archive_of(name, args), args.work, args.repeat, layout_names()
            )
        builds_md = markdown_table(
            ["archive (5 M)", "layout", "MB", "build CPU s (sorted)", "best wall s"], build_rows
        )
        print(builds_md, flush=True)
        body += "\n\nWhole builds (`flowatlas build`, copies alternated):\n\n" + builds_md
    reproduce = "python bench/bench_codec.py " + " ".join(argv if argv else sys.argv[1:])
    body += "\n\n" + "\n".join(provenance(["pyarrow", "duckdb", "polars"], load_before,
                                          reproduce.strip()))  # fmt: skip
    if not args.no_write:
        write_section(args.results, "Archive column layout (bench/bench_codec.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
