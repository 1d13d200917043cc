"""Archive schema v1 and day-partitioned Parquet: round trips and clear errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowatlas.addresses import text_to_bytes16
from flowatlas.errors import InputError, OutputError
from flowatlas.io.archive import (
    ArchiveWriter,
    open_archive,
    read_fragment,
    read_fragment_batches,
)
from flowatlas.schema import COLUMNS, COUNTS_SCALED, FLOW_SCHEMA_V1, TIMESTAMP, check_schema

US_DAY = 86_400_000_000


def flows(times_us: list[int], src: list[str] | None = None) -> pa.Table:
    """A small table in flow schema v1."""
    n = len(times_us)
    src = src or ["192.0.2.1"] * n
    return pa.table(
        {
            "time_start": pa.array(times_us, pa.int64()).cast(TIMESTAMP),
            "time_end": pa.array([t + 1_000_000 for t in times_us], pa.int64()).cast(TIMESTAMP),
            "exporter": text_to_bytes16(["10.0.0.1"] * n),
            "in_if": pa.array([1] * n, pa.uint32()),
            "out_if": pa.array([2] * n, pa.uint32()),
            "src_addr": text_to_bytes16(src),
            "dst_addr": text_to_bytes16(["2001:db8::1"] * n),
            "src_port": pa.array([443] * n, pa.uint16()),
            "dst_port": pa.array([50000] * n, pa.uint16()),
            "proto": pa.array([6] * n, pa.uint8()),
            "bytes": pa.array(range(100, 100 + n), pa.uint64()),
            "packets": pa.array([1] * n, pa.uint64()),
            "sampling_rate": pa.array([1000] * n, pa.uint32()),
            "src_as": pa.array([0] * n, pa.uint32()),
            "dst_as": pa.array([0] * n, pa.uint32()),
        },
        schema=FLOW_SCHEMA_V1,
    )


def test_writer_partitions_by_utc_day_and_reader_reads_back(tmp_path) -> None:
    times = [5, US_DAY - 1, US_DAY, 3 * US_DAY + 7, 2 * US_DAY]
    with ArchiveWriter(tmp_path / "a", counts=COUNTS_SCALED, source="test") as w:
        w.write(flows(times))
    arch = open_archive(tmp_path / "a")
    assert arch.days == ["1970-01-01", "1970-01-02", "1970-01-03", "1970-01-04"]
    assert arch.num_rows == 5
    assert {f.counts for f in arch.files} == {COUNTS_SCALED}
    back = pa.concat_tables(read_fragment(fr) for fr in arch.fragments())
    assert sorted(back.column("time_start").cast(pa.int64()).to_pylist()) == sorted(times)
    assert back.column_names == list(COLUMNS)
    # the files are plain Hive-partitioned Parquet: other tools read them as they are
    ds = pq.ParquetDataset(tmp_path / "a")
    assert ds.read().num_rows == 5


def test_fragments_split_on_row_groups(tmp_path) -> None:
    with ArchiveWriter(tmp_path / "a", row_group_size=10) as w:
        w.write(flows(list(range(0, 95))))
    arch = open_archive(tmp_path / "a")
    frags = arch.fragments(target_rows=25)
    assert sum(f.num_rows for f in frags) == 95
    assert all(f.num_rows <= 25 for f in frags)
    assert len(frags) == 5


def test_extra_columns_ride_along_and_casts_are_lossless(tmp_path) -> None:
    t = flows([1, 2]).append_column("tos", pa.array([0, 32], pa.uint8()))
    t = t.set_column(t.schema.get_field_index("in_if"), "in_if", pa.array([1, 2], pa.int64()))
    with ArchiveWriter(tmp_path / "a") as w:
        w.write(t)
    got = read_fragment(open_archive(tmp_path / "a").fragments()[0])
    assert got.column("tos").to_pylist() == [0, 32]
    assert got.schema.field("in_if").type == pa.uint32()


def test_writer_rejects_lossy_or_missing_columns(tmp_path) -> None:
    t = flows([1])
    bad = t.set_column(t.schema.get_field_index("in_if"), "in_if", pa.array([-1], pa.int64()))
    with pytest.raises(InputError, match="column 'in_if'"), ArchiveWriter(tmp_path / "a") as w:
        w.write(bad)
    with pytest.raises(InputError, match="missing flow schema v1 columns: proto"):
        ArchiveWriter(tmp_path / "b").write(t.drop_columns(["proto"]))
    # an aborted writer leaves no file behind
    assert not list((tmp_path / "a").rglob("*.parquet"))


def test_missing_path_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(InputError, match=r"nowhere: no such file or directory"):
        open_archive(tmp_path / "nowhere")


def test_empty_archive_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="archive is empty: no Parquet files"):
        open_archive(tmp_path / "empty")
    pq.write_table(FLOW_SCHEMA_V1.empty_table(), tmp_path / "empty" / "x.parquet")
    with pytest.raises(InputError, match="archive is empty: its Parquet files hold no rows"):
        open_archive(tmp_path / "empty")


def test_wrong_schema_names_file_and_column(tmp_path) -> None:
    d = tmp_path / "a" / "day=2025-01-01"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), d / "part-0.parquet")
    with pytest.raises(
        InputError,
        match=r"part-0\.parquet: not a flow archive file: column 'time_start' is missing",
    ):
        open_archive(tmp_path / "a")
    t = flows([1]).drop_columns(["bytes"]).append_column("bytes", pa.array([1.5]))
    pq.write_table(t, d / "part-0.parquet")
    with pytest.raises(InputError, match=r"column 'bytes' has type double"):
        open_archive(tmp_path / "a")


def test_corrupt_files_name_the_file(tmp_path) -> None:
    d = tmp_path / "a"
    d.mkdir()
    (d / "junk.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(InputError, match=r"junk\.parquet: not a Parquet file"):
        open_archive(d)
    # a valid footer but a zeroed body: the error comes when the row group is read, and the
    # page checksums say where
    with ArchiveWriter(tmp_path / "b") as w:
        w.write(flows(list(range(1000))))
    path = next((tmp_path / "b").rglob("*.parquet"))
    raw = bytearray(path.read_bytes())
    body_end = len(raw) - 8 - int.from_bytes(raw[-8:-4], "little")  # where the footer starts
    end = min(4000, body_end)
    raw[100:end] = b"\0" * (end - 100)
    path.write_bytes(bytes(raw))
    arch = open_archive(tmp_path / "b")
    with pytest.raises(
        InputError, match=r"part-00000\.parquet: row group 0, column \w+: page checksum mismatch"
    ):
        read_fragment(arch.fragments()[0])
    for batch_rows in (100, 1000):  # in batches, and in one (the row groups read whole)
        with pytest.raises(
            InputError,
            match=r"part-00000\.parquet: row group 0, column \w+: page checksum mismatch",
        ):
            list(read_fragment_batches(arch.fragments()[0], None, batch_rows))


def test_read_fragment_batches_are_the_fragments_rows_in_order(tmp_path, monkeypatch) -> None:
    """A fragment of several row groups read in batches: its rows in order, each batch at
    most ``batch_rows`` rows in one chunk per column (kernels view them without a copy),
    decoded on the calling thread inside serial_kernels; 0 reads it whole. A file changed
    since the archive's open is refused as read_fragment refuses it."""
    import flowatlas.io.archive as archive_module
    from flowatlas.kernels import serial_kernels

    times = list(range(0, 1000 * 7, 7))
    with ArchiveWriter(tmp_path / "a", row_group_size=128) as w:
        w.write(flows(times))
    frags = open_archive(tmp_path / "a").fragments(300)
    assert len(frags) > 1 and all(len(f.row_groups) > 1 for f in frags[:-1])
    whole = [read_fragment(f, ["time_start", "src_addr"]) for f in frags]
    for batch_rows in (0, 1, 50, 128, 129, 256, 257, 300, 1000):
        for f, want in zip(frags, whole, strict=True):
            got = list(read_fragment_batches(f, ["time_start", "src_addr"], batch_rows))
            if batch_rows == 0:
                assert len(got) == 1
            assert all(t.num_rows <= (batch_rows or f.num_rows) for t in got)
            assert all(c.num_chunks == 1 for t in got for c in t.columns)
            assert pa.concat_tables(got).equals(want)
    # a fragment of one batch's rows or fewer is read whole (no batch reader)
    threads: list[object] = []
    spied = ("iter_batches", "read_row_groups")
    real = {name: getattr(archive_module.pq.ParquetFile, name) for name in spied}

    def spy(name):
        def call(self, *args, **kwargs):
            threads.append((name, kwargs.get("use_threads", True)))
            return real[name](self, *args, **kwargs)

        return call

    for name in spied:
        monkeypatch.setattr(archive_module.pq.ParquetFile, name, spy(name))
    rows = frags[0].num_rows
    list(read_fragment_batches(frags[0], None, 64))
    list(read_fragment_batches(frags[0], None, rows))
    with serial_kernels():
        list(read_fragment_batches(frags[0], None, 64))
        list(read_fragment_batches(frags[0], None, rows))
    assert threads == [("iter_batches", True), ("read_row_groups", True),
                       ("iter_batches", False), ("read_row_groups", False)]  # fmt: skip
    path = next((tmp_path / "a").rglob("*.parquet"))
    pq.write_table(flows(list(range(7))), path)
    for batch_rows in (64, rows):
        with pytest.raises(InputError, match="changed during the build"):
            list(read_fragment_batches(frags[0], None, batch_rows))


def test_hidden_and_underscore_files_are_ignored(tmp_path) -> None:
    with ArchiveWriter(tmp_path / "a") as w:
        w.write(flows([1]))
    (tmp_path / "a" / "_import").mkdir()
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a" / "_import" / "q.parquet")
    (tmp_path / "a" / "day=1970-01-01" / ".part.parquet.tmp").write_bytes(b"partial")
    assert open_archive(tmp_path / "a").num_rows == 1


def test_unwritable_output_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OutputError, match=r"file/sub: cannot create directory"):
        ArchiveWriter(tmp_path / "file" / "sub")


def test_schema_version_and_counts_checked() -> None:
    meta = {b"flowatlas.schema_version": b"2"}
    with pytest.raises(InputError, match="schema version 2 is not supported"):
        check_schema(FLOW_SCHEMA_V1.with_metadata(meta), "x")
    with pytest.raises(InputError, match=r"unknown flowatlas\.counts"):
        check_schema(FLOW_SCHEMA_V1.with_metadata({b"flowatlas.counts": b"weird"}), "x")
    assert check_schema(FLOW_SCHEMA_V1, "x") == "raw"


def test_write_is_deterministic(tmp_path) -> None:
    rng = np.random.default_rng(0)
    times = sorted(int(t) for t in rng.integers(0, 3 * US_DAY, size=500))
    for name in ("a", "b"):
        with ArchiveWriter(tmp_path / name) as w:
            w.write(flows(times))
    for f in (tmp_path / "a").rglob("*.parquet"):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()


def test_schema_checked_once_per_schema_still_names_each_bad_file(tmp_path, monkeypatch) -> None:
    """open_archive checks each distinct schema once (files of one archive share theirs):
    each file still gets its own counts mode, and a bad file after good ones with the same
    columns, or with the same metadata but another column type, is refused by name."""
    import flowatlas.io.archive as archive_module
    from flowatlas.schema import schema_with_metadata

    checked: list[str] = []

    def counting(schema, where):
        checked.append(where)
        return check_schema(schema, where)

    monkeypatch.setattr(archive_module, "check_schema", counting)
    root = tmp_path / "a"
    for day, counts in (("01", "raw"), ("02", "raw"), ("03", COUNTS_SCALED), ("04", "raw")):
        d = root / f"day=2025-01-{day}"
        d.mkdir(parents=True)
        t = flows([1, 2]).replace_schema_metadata(schema_with_metadata(counts).metadata)
        pq.write_table(t, d / "part-0.parquet")
    arch = open_archive(root)
    assert [f.counts for f in arch.files] == ["raw", "raw", COUNTS_SCALED, "raw"]
    assert len(checked) == 2  # one per distinct schema
    # the same metadata, another Parquet schema: checked, and refused by name
    bad = flows([1]).drop_columns(["bytes"]).append_column("bytes", pa.array([1.5]))
    bad = bad.replace_schema_metadata(schema_with_metadata("raw").metadata)
    pq.write_table(bad, root / "day=2025-01-04" / "part-0.parquet")
    with pytest.raises(InputError, match=r"day=2025-01-04/part-0\.parquet: .*'bytes' has type"):
        open_archive(root)
    # a refused schema is never remembered: the same file is refused again
    known: dict = {}
    path = root / "day=2025-01-04" / "part-0.parquet"
    for _ in range(2):
        with pytest.raises(InputError, match="'bytes' has type"):
            archive_module.describe_file(path, root, known)


def test_fragments_carry_the_parsed_footer_and_read_without_it_too(tmp_path, monkeypatch) -> None:
    """A fragment hands read_fragment the footer parsed at the archive's open (not parsed
    again); one without it (made by hand, or its file rewritten since) reads the file's own;
    equality, hashing and pickling ignore it."""
    import dataclasses
    import pickle

    import flowatlas.io.archive as archive_module

    with ArchiveWriter(tmp_path / "a") as w:
        w.write(flows(list(range(50))))
    frag = open_archive(tmp_path / "a").fragments()[0]
    assert frag.metadata is not None and frag.metadata.num_rows == 50
    given: list[object] = []
    real = archive_module.pq.ParquetFile

    def spy(path, **kwargs):
        given.append(kwargs.get("metadata"))
        return real(path, **kwargs)

    monkeypatch.setattr(archive_module.pq, "ParquetFile", spy)
    bare = dataclasses.replace(frag, metadata=None)
    assert bare == frag and hash(bare) == hash(frag)
    assert read_fragment(frag).equals(read_fragment(bare))
    assert given == [frag.metadata, None]
    again = pickle.loads(pickle.dumps(frag))
    assert again == frag and again.metadata.num_rows == 50
    # the file rewritten with other rows: refused, never read with the old footer
    path = next((tmp_path / "a").rglob("*.parquet"))
    pq.write_table(flows(list(range(7))), path)
    with pytest.raises(InputError, match="changed during the build"):
        read_fragment(frag)


def test_read_fragment_decodes_on_its_own_thread_where_tasks_fill_the_cores(
    tmp_path, monkeypatch
) -> None:
    """Inside serial_kernels (map tasks on every core) a fragment's columns are decoded by
    the calling thread, not handed to Arrow's pool (which left the maps' cores idle); alone
    Arrow's threads are used. The rows are the same either way."""
    import flowatlas.io.archive as archive_module
    from flowatlas.kernels import serial_kernels

    with ArchiveWriter(tmp_path / "a") as w:
        w.write(flows(list(range(50))))
    frag = open_archive(tmp_path / "a").fragments()[0]
    threads: list[object] = []
    real = archive_module.pq.ParquetFile.read_row_groups

    def spy(self, row_groups, **kwargs):
        threads.append(kwargs.get("use_threads", True))
        return real(self, row_groups, **kwargs)

    monkeypatch.setattr(archive_module.pq.ParquetFile, "read_row_groups", spy)
    alone = read_fragment(frag)
    with serial_kernels():
        in_tasks = read_fragment(frag)
    assert threads == [True, False]
    assert in_tasks.equals(alone) and alone.num_rows == 50
