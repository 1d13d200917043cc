"""build_cube_from_table: records in memory give the cube their archive on disk gives.

Every Parquet file of the cube must be byte for byte the one ``build_cube`` writes for the
same records on disk, eagerly and on threads; cube.json may differ only in its
``archive`` entry (no files: the records were never in any). Bad input gets one clear error
naming the column, and bad rows are quarantined and counted as they are on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowatlas.config import load_config
from flowatlas.engine.build import build_cube, build_cube_from_table
from flowatlas.errors import ConfigError, FlowatlasError, InputError
from flowatlas.schema import COUNTS_RAW
from flowatlas.synth import synthesize


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("memory") / "archive"
    synthesize(root, records=30_000, days=20, start="2025-09-25", seed=11)
    return root


@pytest.fixture(scope="module")
def files(archive) -> list[Path]:
    return sorted(archive.rglob("*.parquet"))


@pytest.fixture(scope="module")
def records(files) -> pa.Table:
    """The whole archive as one table, in file order (every synth file counts ``raw``)."""
    return pa.concat_tables([pq.read_table(f) for f in files])


@pytest.fixture(scope="module")
def config(archive):
    return load_config(archive / "flowatlas.toml")


@pytest.fixture(scope="module")
def on_disk(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("disk") / "cube"
    build_cube(archive, out, workers=0)
    return out


def assert_same_cube(disk: Path, memory: Path, rows: int) -> None:
    """Every Parquet file equal byte for byte; cube.json equal but for its input entry."""
    names = sorted(p.name for p in disk.iterdir())
    assert names == sorted(p.name for p in memory.iterdir())
    parquet = [n for n in names if n.endswith(".parquet")]
    assert len(parquet) == 7  # cells, rollups, top lists, sketches, links, geo
    for name in parquet:
        assert (disk / name).read_bytes() == (memory / name).read_bytes(), name
    a = json.loads((disk / "cube.json").read_text())
    b = json.loads((memory / "cube.json").read_text())
    assert b["archive"] == {"name": "archive", "rows": rows, "files": [], "in_memory": True}
    assert a["archive"]["rows"] == rows and a["archive"]["files"]
    del a["archive"], b["archive"]
    assert a == b


@pytest.mark.parametrize(
    ("workers", "partitions", "partition_rows"),
    [(0, None, None), (0, 3, 4_000), (2, None, None), (2, 5, 3_000), (None, None, None)],
)
def test_same_cube_as_on_disk(
    records, config, on_disk, tmp_path, workers, partitions, partition_rows
):
    out = tmp_path / "cube"
    s = build_cube_from_table(
        records,
        out,
        config=config,
        name="archive",
        workers=workers,
        partitions=partitions,
        partition_rows=partition_rows,
    )
    assert s.records == s.cubed == records.num_rows and not s.quarantined
    assert_same_cube(on_disk, out, records.num_rows)
    assert not (tmp_path / ".cube.work").exists()


def test_batches_readers_and_generators(records, files, config, on_disk, tmp_path):
    """RecordBatches, a reader or per-file tables (each with its own metadata): same cube."""
    forms = {
        "batches": records.to_batches(max_chunksize=2_500),
        "reader": pa.RecordBatchReader.from_batches(records.schema, records.to_batches()),
        "tables": (pq.read_table(f) for f in files),
    }
    for form, value in forms.items():
        out = tmp_path / form
        build_cube_from_table(value, out, config=config, name="archive", workers=0)
        assert_same_cube(on_disk, out, records.num_rows)


def test_extra_columns_ride_along(records, config, on_disk, tmp_path):
    extra = records.append_column("note", pa.array(["x"] * records.num_rows))
    out = tmp_path / "cube"
    build_cube_from_table(extra, out, config=config, name="archive", workers=0)
    assert_same_cube(on_disk, out, records.num_rows)


def test_counts_from_metadata_or_argument(records, tmp_path):
    """``scaled`` records are not multiplied by the sampling rate; ``raw`` ones are."""
    raw_total = int(pa.compute.sum(records.column("bytes")).as_py())
    scaled = build_cube_from_table(records, tmp_path / "a", counts="scaled", workers=0)
    meta = json.loads((tmp_path / "a" / "cube.json").read_text())
    assert scaled.cubed == records.num_rows and meta["totals"]["bytes"] == raw_total
    marked = records.replace_schema_metadata({b"flowatlas.counts": b"scaled"})
    build_cube_from_table(marked, tmp_path / "b", workers=0)
    assert (tmp_path / "a" / "cells.parquet").read_bytes() == (
        tmp_path / "b" / "cells.parquet"
    ).read_bytes()
    build_cube_from_table(records, tmp_path / "c", workers=0)  # raw: multiplied
    meta = json.loads((tmp_path / "c" / "cube.json").read_text())
    assert meta["totals"]["bytes"] > raw_total


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t.drop_columns(["dst_addr"]),
            r"not flow schema v1: column 'dst_addr' is missing",
        ),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("bytes"), "bytes", t.column("bytes").cast(pa.int64())
            ),
            r"column 'bytes' has type int64, flow schema v1 wants uint64",
        ),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("src_addr"),
                "src_addr",
                t.column("src_addr").cast(pa.binary()),
            ),
            r"column 'src_addr' has type binary, flow schema v1 wants fixed_size_binary\[16\]",
        ),
    ],
)
def test_wrong_schema_names_the_column(records, tmp_path, change, message):
    bad = change(records.slice(0, 100))
    with pytest.raises(InputError, match=rf"^in-memory records: {message}"):
        build_cube_from_table(bad, tmp_path / "cube", workers=0)
    with pytest.raises(InputError, match=rf"^in-memory records, item 1: {message}"):
        build_cube_from_table(
            [records.slice(0, 10), *bad.to_batches()], tmp_path / "cube", workers=0
        )
    assert not (tmp_path / "cube").exists()


def test_bad_inputs_are_one_clear_error(records, archive, tmp_path):
    out = tmp_path / "cube"
    with pytest.raises(InputError, match="no rows to build a cube from"):
        build_cube_from_table(records.slice(0, 0), out, workers=0)
    with pytest.raises(InputError, match="no rows"):
        build_cube_from_table([], out, workers=0)
    with pytest.raises(InputError, match=r"item 0: is a dict, not a pyarrow RecordBatch"):
        build_cube_from_table([{"bytes": 1}], out, workers=0)
    with pytest.raises(InputError, match="expected a pyarrow Table or RecordBatches, not int"):
        build_cube_from_table(3, out, workers=0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="build an archive on disk with build_cube"):
        build_cube_from_table(archive, out, workers=0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="counts must be 'raw' or 'scaled'"):
        build_cube_from_table(records, out, counts="cooked", workers=0)
    with pytest.raises(ConfigError, match=r"processes=True: in-memory records build in this"):
        build_cube_from_table(records, out, workers=2, processes=True)
    with pytest.raises(ConfigError, match=r"scheduler='tcp://h:1': .* ArchiveWriter"):
        build_cube_from_table(records, out, scheduler="tcp://h:1")
    assert issubclass(InputError, FlowatlasError) and issubclass(ConfigError, FlowatlasError)
    assert not out.exists()


def _with_bad_rows(records: pa.Table) -> pa.Table:
    """Nulls in three columns (counted under the first) and one volume overflowing 64 bits."""
    t = records.slice(0, 6_000)

    def replace(table: pa.Table, name: str, values: list) -> pa.Table:
        i = table.schema.get_field_index(name)
        return table.set_column(i, name, pa.array(values, table.schema.field(name).type))

    b = t.column("bytes").to_pylist()
    ex = t.column("exporter").to_pylist()
    ts = t.column("time_start").to_pylist()
    for i in (3, 50, 51):
        b[i] = None
    for i in (50, 700):
        ex[i] = None  # row 50 counts once, under exporter (the first of its null columns)
    ts[999] = None
    rate = t.column("sampling_rate").to_pylist()
    big = next(i for i, r in enumerate(rate) if r > 1 and b[i] is not None and ex[i] is not None)
    b[big] = 2**63  # x sampling_rate overflows 64 bits
    t = replace(t, "bytes", b)
    t = replace(t, "exporter", ex)
    return replace(t, "time_start", ts)


@pytest.mark.parametrize("workers", [0, 2])
def test_quarantine_accounting_matches_disk(records, config, tmp_path, workers):
    bad = _with_bad_rows(records)
    src = tmp_path / "archive" / "day=2025-09-25"
    src.mkdir(parents=True)
    pq.write_table(bad, src / "part-00000.parquet")
    disk = build_cube(tmp_path / "archive", tmp_path / "disk", config=config, workers=workers)
    mem = build_cube_from_table(
        bad, tmp_path / "memory", config=config, name="archive", workers=workers
    )
    for s in (disk, mem):
        assert s.records == bad.num_rows == s.cubed + sum(s.quarantined.values())
        assert s.quarantined == {
            "null_time_start": 1,
            "null_exporter": 2,
            "null_bytes": 2,
            "volume_overflow": 1,
        }
    assert (mem.records, mem.cubed, mem.quarantined) == (disk.records, disk.cubed, disk.quarantined)
    assert_same_cube(tmp_path / "disk", tmp_path / "memory", bad.num_rows)
    meta = json.loads((tmp_path / "memory" / "cube.json").read_text())
    assert meta["records"] == {
        "read": mem.records,
        "cubed": mem.cubed,
        "quarantined": dict(sorted(mem.quarantined.items())),
    }


def _quarantine_oracle(table: pa.Table) -> tuple[list[bool], dict[str, int]]:
    """Rows with a null in any column, and each such row counted under its first null
    column (in the table's column order), row by row in Python."""
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    keep, counts = [], {}
    for i in range(table.num_rows):
        first = next((name for name in table.column_names if cols[name][i] is None), None)
        keep.append(first is None)
        if first is not None:
            counts[f"null_{first}"] = counts.get(f"null_{first}", 0) + 1
    return keep, counts


@pytest.mark.parametrize("nulls", ["none", "one row", "scattered", "every row", "two columns"])
@pytest.mark.parametrize("column", ["time_start", "exporter", "src_addr", "bytes", "in_if"])
def test_orient_and_cell_quarantines_the_rows_with_nulls(records, small_plan, column, nulls):
    """A batch's records with a null in any column go to quarantine, counted once under
    their first null column, and the others come out as the same batch without them gives:
    a null in one column only (the per-batch check that any column holds one must see it
    wherever it is), in every row, in two columns at once, in a one-record batch, none."""
    from flowatlas.engine.pipeline import COLUMNS, orient_and_cell

    rng = np.random.default_rng(len(column) * 7 + len(nulls))
    t = records.slice(0, 2_000).select(COLUMNS)
    rows = {
        "none": [], "one row": [0], "scattered": sorted(rng.choice(t.num_rows, 150, False)),
        "every row": range(t.num_rows), "two columns": sorted(rng.choice(t.num_rows, 90, False)),
    }  # fmt: skip
    nulled = [column] + (["packets"] if nulls == "two columns" else [])
    for name in nulled:
        values = t.column(name).to_pylist()
        for i in rows[nulls][:: 2 if name == "packets" else 1]:
            values[i] = None
        i = t.schema.get_field_index(name)
        t = t.set_column(i, name, pa.array(values, t.schema.field(name).type))
    for batch in (t, t.slice(int(rows[nulls][0]) if rows[nulls] else 0, 1)):
        keep, want = _quarantine_oracle(batch)
        got, stats = orient_and_cell(batch, small_plan, COUNTS_RAW)
        clean, clean_stats = orient_and_cell(batch.filter(pa.array(keep)), small_plan, COUNTS_RAW)
        assert stats.records == batch.num_rows
        assert stats.quarantined == {**want, **clean_stats.quarantined}
        assert stats.cubed == clean_stats.cubed == got.key.size
        for a, b in zip(got.columns(), clean.columns(), strict=True):
            assert a.tolist() == b.tolist()
