"""The archive's column layouts (flowatlas.io.archive.writer_options): every layout, the
default "auto" above all (per-column codecs and DELTA_BINARY_PACKED encodings), holds exactly
the values written, read by pyarrow, DuckDB and Polars alike, on adversarial values; an
archive whose files differ in layout builds the cube the uniform archive builds.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flowatlas.io.archive import (
    AUTO_LAYOUT,
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    ArchiveWriter,
    file_layout,
    open_archive,
    read_parquet,
    writer_options,
)
from flowatlas.schema import COLUMNS, FLOW_SCHEMA_V1, TIMESTAMP

duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")

US_DAY = 86_400_000_000
U64_EDGES = [0, 1, 1 << 63, (1 << 64) - 1]


def addresses(rng: np.random.Generator, n: int) -> pa.Array:
    """16-byte addresses: IPv6, IPv4-mapped, and the all-zero and all-one extremes."""
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(rng.bytes(16))
        elif kind == 1:
            out.append(b"\0" * 10 + b"\xff\xff" + rng.bytes(4))  # IPv4-mapped
        else:
            out.append(b"\0" * 16 if kind == 2 else b"\xff" * 16)
    return pa.array(out, pa.binary(16))


def adversarial(n: int = 50_000, seed: int = 7) -> pa.Table:
    """Flow schema v1 rows at the edges of every column's type: uint64 counters alternating
    0, 1, 2^63, 2^64-1 (the deltas wrap), times unsorted and on day edges, uint32 2^32-1,
    ports 0 and 65535, IPv6 and IPv4-mapped addresses; and random AS numbers, enough distinct
    values for a dictionary to outgrow its page (the writer then falls back to PLAIN)."""
    rng = np.random.default_rng(seed)
    day = 20_000 * US_DAY
    edges = np.array([day - 1, day, day + US_DAY - 1, 0, 1, (1 << 62), day + 12345],
                     dtype=np.int64)  # fmt: skip
    times = np.where(np.arange(n) % 3 == 0, edges[np.arange(n) % len(edges)],
                     rng.integers(0, 1 << 53, n))  # fmt: skip
    counters = np.array(U64_EDGES, dtype=np.uint64)[np.arange(n) % 4]
    u32 = np.where(np.arange(n) % 2 == 0, np.uint32(0xFFFFFFFF), rng.integers(0, 5, n)).astype(
        np.uint32
    )
    cols = {
        "time_start": pa.array(times, pa.int64()).cast(TIMESTAMP),
        "time_end": pa.array(times[::-1].copy(), pa.int64()).cast(TIMESTAMP),
        "exporter": addresses(rng, n),
        "in_if": pa.array(u32),
        "out_if": pa.array(u32[::-1].copy()),
        "src_addr": addresses(rng, n),
        "dst_addr": addresses(rng, n),
        "src_port": pa.array(np.where(np.arange(n) % 2, 65535, 0).astype(np.uint16)),
        "dst_port": pa.array(rng.integers(0, 65536, n).astype(np.uint16)),
        "proto": pa.array(np.where(np.arange(n) % 2, 255, 0).astype(np.uint8)),
        "bytes": pa.array(counters),
        "packets": pa.array(counters[::-1].copy()),
        "sampling_rate": pa.array(u32),
        "src_as": pa.array(rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)),
        "dst_as": pa.array(u32),
    }
    return pa.table(cols, schema=FLOW_SCHEMA_V1)


def random_rows(n: int = 20_000, seed: int = 3) -> pa.Table:
    """Ordinary-looking random rows: sorted times within a day, few exporters."""
    rng = np.random.default_rng(seed)
    t0 = 20_100 * US_DAY
    times = np.sort(rng.integers(t0, t0 + US_DAY, n))
    exporters = addresses(rng, 8)
    return pa.table(
        {
            "time_start": pa.array(times, pa.int64()).cast(TIMESTAMP),
            "time_end": pa.array(times + rng.integers(0, 10**8, n), pa.int64()).cast(TIMESTAMP),
            "exporter": exporters.take(pa.array(rng.integers(0, 8, n))),
            "in_if": pa.array(rng.integers(0, 64, n).astype(np.uint32)),
            "out_if": pa.array(rng.integers(0, 64, n).astype(np.uint32)),
            "src_addr": addresses(rng, n),
            "dst_addr": addresses(rng, n),
            "src_port": pa.array(rng.integers(0, 65536, n).astype(np.uint16)),
            "dst_port": pa.array(rng.integers(0, 1024, n).astype(np.uint16)),
            "proto": pa.array(rng.choice([6, 17, 1], n).astype(np.uint8)),
            "bytes": pa.array(rng.pareto(1.2, n).astype(np.uint64) * 40 + 40),
            "packets": pa.array(rng.integers(1, 10**6, n).astype(np.uint64)),
            "sampling_rate": pa.array(rng.choice([1, 1000], n).astype(np.uint32)),
            "src_as": pa.array(rng.integers(0, 70_000, n).astype(np.uint32)),
            "dst_as": pa.array(rng.integers(0, 70_000, n).astype(np.uint32)),
        },
        schema=FLOW_SCHEMA_V1,
    )


def write(table: pa.Table, path, layout: str, row_group_rows: int = 16_384) -> None:
    with pq.ParquetWriter(path, table.schema, **writer_options(layout)) as w:
        w.write_table(table, row_group_size=row_group_rows)


def as_v1(table: pa.Table) -> pa.Table:
    """Another engine's table in flow schema v1's exact types (its binary columns as
    fixed_size_binary(16), its timestamps as UTC microseconds), column by column."""
    cols = []
    for f in FLOW_SCHEMA_V1:
        col = table.column(f.name)
        if pa.types.is_fixed_size_binary(f.type):
            col = pa.array([None if v is None else v for v in col.to_pylist()], f.type)
        elif pa.types.is_timestamp(f.type):
            col = pc.cast(col.cast(pa.timestamp("us", tz="UTC")), f.type)
        else:
            col = col.cast(f.type)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=FLOW_SCHEMA_V1)


def readers(path) -> dict[str, pa.Table]:
    """The file as pyarrow (checksums verified), DuckDB and Polars read it."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return {
        "pyarrow": read_parquet(path).select(list(COLUMNS)).cast(FLOW_SCHEMA_V1),
        "duckdb": as_v1(con.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table()),
        "polars": as_v1(pl.read_parquet(path).to_arrow()),
    }


def differing(a: pa.Table, b: pa.Table) -> list[str]:
    """Columns whose values differ (row by row)."""
    return [n for n in COLUMNS if not a.column(n).equals(b.column(n))]


@pytest.mark.parametrize("make", [adversarial, random_rows])
@pytest.mark.parametrize("layout", COMPRESSIONS)
def test_every_layout_reads_back_exactly_in_pyarrow_duckdb_and_polars(tmp_path, make, layout):
    table = make()
    path = tmp_path / f"{layout}.parquet"
    write(table, path, layout)
    meta = pq.read_metadata(path)
    assert meta.num_row_groups > 1
    assert (file_layout(meta) == "auto") == (layout == "auto")
    for engine, got in readers(path).items():
        assert got.num_rows == table.num_rows, engine
        assert differing(got, table) == [], f"{engine} reads {layout} back otherwise"


def test_the_comparison_sees_one_changed_value(tmp_path):
    """The round trip's check can fail: a file holding one value changed (the top bit of
    one counter) is told apart by every reader."""
    table = adversarial(4_000)
    i = 5  # counters[5] = 1 -> 2^63 + 1
    changed = table.set_column(
        COLUMNS.index("bytes"), "bytes",
        pa.array([v + (1 << 63) if k == i else v
                  for k, v in enumerate(table.column("bytes").to_pylist())], pa.uint64()),
    )  # fmt: skip
    write(changed, tmp_path / "x.parquet", "auto")
    for engine, got in readers(tmp_path / "x.parquet").items():
        assert differing(got, table) == ["bytes"], engine


def test_auto_layout_is_the_default_and_lays_out_every_column_as_measured(tmp_path):
    """New archives are written in the auto layout: each v1 column in its codec and
    encoding (the footer says so), extra columns compressed too; the uniform layouts keep
    one codec and no delta encodings."""
    assert DEFAULT_COMPRESSION == "auto" and set(AUTO_LAYOUT) == set(COLUMNS)
    table = random_rows(3_000).append_column("note", pa.array(["x"] * 3_000))
    with ArchiveWriter(tmp_path / "a") as w:
        w.write(table)
    [f] = open_archive(tmp_path / "a").files
    assert f.compression == "auto"
    rg = pq.read_metadata(f.path).row_group(0)
    for c in range(rg.num_columns):
        col = rg.column(c)
        if col.path_in_schema == "note":
            assert col.compression.lower() == "lz4"
            continue
        codec, encoding = AUTO_LAYOUT[col.path_in_schema]
        assert col.compression.lower() == codec
        if encoding == "DICTIONARY":
            assert "RLE_DICTIONARY" in col.encodings
        else:
            assert encoding in col.encodings and "RLE_DICTIONARY" not in col.encodings
    assert read_parquet(f.path).equals(as_archived(table))
    for layout in ("zstd", "lz4", "none"):
        opts = writer_options(layout, page_checksums=False)
        assert opts["compression"] == layout and "column_encoding" not in opts
        assert opts["write_page_checksum"] is False
    assert writer_options("auto")["write_page_checksum"] is True


def as_archived(table: pa.Table) -> pa.Table:
    """``table`` with the metadata an archive file carries (to compare a read-back)."""
    from flowatlas.schema import schema_with_metadata

    return table.replace_schema_metadata(schema_with_metadata("raw", "flowatlas").metadata)


def test_inspect_names_files_by_layout_whatever_their_codec(tmp_path):
    """file_layout: "auto" only where every v1 column is as AUTO_LAYOUT says; a file in one
    codec, or auto with one column otherwise, is named by its codecs."""
    table = random_rows(2_000)
    write(table, tmp_path / "auto.parquet", "auto")
    write(table, tmp_path / "lz4.parquet", "lz4")
    opts = writer_options("auto")
    opts["column_encoding"] = {k: v for k, v in opts["column_encoding"].items() if k != "bytes"}
    with pq.ParquetWriter(tmp_path / "almost.parquet", table.schema, **opts) as w:
        w.write_table(table)
    assert file_layout(pq.read_metadata(tmp_path / "auto.parquet")) == "auto"
    assert file_layout(pq.read_metadata(tmp_path / "lz4.parquet")) == "lz4"
    assert file_layout(pq.read_metadata(tmp_path / "almost.parquet")) == "lz4"


def test_an_archive_of_mixed_layouts_builds_the_same_cube(tmp_path):
    """Each day's file rewritten in another layout (auto, zstd, lz4, none in turn): the same
    records, so the cube's tables are byte-identical to the uniform archive's."""
    from flowatlas.engine.build import build_cube
    from flowatlas.synth import synthesize

    synthesize(tmp_path / "auto", records=6_000, days=4, workers=1, compression="auto")
    shutil.copytree(tmp_path / "auto", tmp_path / "mixed")
    files = sorted((tmp_path / "mixed").glob("day=*/*.parquet"))
    layouts = ["auto", "zstd", "lz4", "none"]
    for path, layout in zip(files, layouts, strict=True):
        pf = pq.ParquetFile(path)
        table = pf.read()
        path.unlink()
        with pq.ParquetWriter(path, pf.schema_arrow, **writer_options(layout)) as w:
            w.write_table(table)
    arch = open_archive(tmp_path / "mixed")
    assert [f.compression for f in arch.files] == ["auto", "zstd", "lz4", "uncompressed"]
    for name in ("auto", "mixed"):
        build_cube(tmp_path / name, tmp_path / f"cube-{name}", workers=0)
    cubes = sorted((tmp_path / "cube-auto").glob("*.parquet"))
    assert cubes
    for f in cubes:
        assert f.read_bytes() == (tmp_path / "cube-mixed" / f.name).read_bytes(), f.name
    meta = json.loads((tmp_path / "auto" / "_synth.json").read_text())
    assert meta["compression"] == "auto"
