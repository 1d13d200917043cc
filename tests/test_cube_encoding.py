"""The cube's files from dictionary-coded columns: the bytes their strings give.

A build hands the cube writer its string dimensions as codes (dictionary arrays) and the
writer renumbers each row group's dictionary as Parquet's encoder would make it from the
strings (cube._write_parquet). The oracle is the writer of the strings themselves, with the
options the cube has always used: the files must be equal byte for byte, whatever the codes,
the nulls, the chunks, the row groups and the pages.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowatlas.engine import cube
from flowatlas.kernels.accumulate import first_seen

NAMES = {
    "region": [f"R{i:02d}" for i in range(40)],
    "network_type": ["CDN", "Hosting", "ISP Tier1", "Unknown", "Neocloud"],
    "direction": ["ingress", "egress", "transit"],
    "rollup": ["day", "month", "quarter", "all"],
    "grouping": ["total", "region", "region,network_type"],
}


def _strings_file(table: pa.Table, path) -> bytes:
    """The oracle: the table's strings, written by pyarrow with the cube's options."""
    strings = table
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            strings = strings.set_column(
                i, f.with_type(f.type.value_type), table.column(i).cast(f.type.value_type)
            )
    options = cube._write_options(strings.schema)
    pq.write_table(strings, path, row_group_size=cube.ROW_GROUP_ROWS, **options)
    return path.read_bytes()


def _coded(names: list[str], codes: np.ndarray, nulls: np.ndarray | None = None) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes, pa.int32(), mask=nulls), pa.array(names, pa.string())
    )


def _table(rng: np.random.Generator, n: int, null_share: float = 0.0) -> pa.Table:
    """Dimension columns as codes (a random subset of each dictionary in use, in random
    order, some never used), a timestamp, uint64 measures up to the maximum."""
    cols: dict[str, pa.Array] = {
        "bucket_start": pa.array(np.sort(rng.integers(0, 10**15, n)), pa.int64()).cast(
            cube.TIMESTAMP
        )
    }
    for name, names in NAMES.items():
        shuffled = list(rng.permutation(names))
        used = rng.integers(1, len(names) + 1)
        codes = rng.integers(0, used, n).astype(np.int32)
        if rng.random() < 0.5:
            codes = np.sort(codes)  # long runs, as in a sorted cube table
        nulls = rng.random(n) < null_share if null_share else None
        cols[name] = _coded(shuffled, codes, nulls)
    cols["ip_version"] = pa.array(rng.choice([4, 6], n).astype(np.uint8))
    big = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    big[: min(n, 3)] = np.iinfo(np.uint64).max
    cols["bytes"] = pa.array(big, pa.uint64())
    cols["flows"] = pa.array(rng.integers(0, 5, n).astype(np.uint64), pa.uint64())
    return pa.table(cols)


def _same_bytes(table: pa.Table, tmp_path) -> None:
    cube._write_parquet(table, tmp_path / "coded.parquet")
    want = _strings_file(table, tmp_path / "strings.parquet")
    assert (tmp_path / "coded.parquet").read_bytes() == want
    # and it reads back as the strings: the type pyarrow stored is theirs
    coded = pq.read_table(tmp_path / "coded.parquet")
    assert coded.equals(pq.read_table(tmp_path / "strings.parquet"))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [0, 1, 7, 19_999, 20_000, 20_001, 65_537])
def test_coded_columns_give_the_bytes_of_their_strings(tmp_path, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed * 1000 + n)
    _same_bytes(_table(rng, n, null_share=[0.0, 0.1, 0.9][seed % 3]), tmp_path)


@pytest.mark.parametrize("late", [1, 19_999, 20_000, 20_001, 39_999, 40_000, 59_000])
@pytest.mark.parametrize("before", [1, 2, 3, 4, 5])
def test_values_first_seen_late(tmp_path, late: int, before: int) -> None:
    """A value first seen at row ``late``, after ``before`` others: the pages before it
    had a smaller dictionary (the index width changes from 1 to 2 bits past one value,
    2 to 3 past four); where that changes a page's width the strings are written, else the
    codes, and the bytes are the strings' either way."""
    n = 60_000
    names = [f"v{i}" for i in range(before + 1)]
    codes = np.arange(n, dtype=np.int32) % before
    codes[late] = before
    t = pa.table({"region": _coded(names[::-1], before - codes), "x": pa.array(codes)})
    _same_bytes(t, tmp_path)


def test_nulls_only_chunks_and_unused_entries(tmp_path) -> None:
    """A column null throughout, one null in its first row group only, columns of several
    chunks with different dictionaries (the rollups, made by parts), a dictionary whose
    entries are mostly unused, and a dictionary column the writer keeps plain (decoded)."""
    n = 50_000
    names = NAMES["region"]
    parts = []
    rng = np.random.default_rng(7)
    for k in (3, 1, 17, 0):
        m = 12_345 + k
        parts.append(
            pa.table(
                {
                    "rollup": _coded([NAMES["rollup"][k % 4]], np.zeros(m, np.int32)),
                    "region": (
                        pa.nulls(m, cube.DICTIONARY)
                        if k == 0
                        else _coded(names, rng.integers(0, k + 1, m).astype(np.int32))
                    ),
                    "direction": _coded(["egress", "ingress"], np.zeros(m, np.int32)),
                    "link": _coded(["a", "b"], rng.integers(0, 2, m).astype(np.int32)),
                }
            )
        )
    _same_bytes(pa.concat_tables(parts), tmp_path)
    _same_bytes(pa.table({"region": pa.nulls(n, cube.DICTIONARY)}), tmp_path)
    one_null = np.zeros(n, bool)
    one_null[0] = True
    _same_bytes(pa.table({"direction": _coded(["x"], np.zeros(n, np.int32), one_null)}), tmp_path)
    _same_bytes(pa.table({"region": pa.array([], cube.DICTIONARY)}), tmp_path)
    _same_bytes(pa.table({}), tmp_path)


def test_row_groups(tmp_path, monkeypatch) -> None:
    """Each row group gets its own dictionary (renumbered within it): small row groups,
    values that first appear in a later one, a last one of a single row."""
    monkeypatch.setattr(cube, "ROW_GROUP_ROWS", 25_000)
    rng = np.random.default_rng(3)
    t = _table(rng, 3 * 25_000 + 1, null_share=0.05)
    _same_bytes(t, tmp_path)
    codes = np.zeros(75_001, np.int32)
    codes[60_000:] = 2
    codes[-1] = 1
    _same_bytes(pa.table({"grouping": _coded(NAMES["grouping"], codes)}), tmp_path)


def test_old_pyarrow_writes_the_strings(tmp_path, monkeypatch) -> None:
    """Without ParquetWriter.add_key_value_metadata (pyarrow < 16) the strings are written."""
    monkeypatch.delattr(pq.ParquetWriter, "add_key_value_metadata")
    _same_bytes(_table(np.random.default_rng(1), 1000, 0.2), tmp_path)


def _first_seen_oracle(codes: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    order: list[int] = []
    first: list[int] = []
    new = []
    for i, c in enumerate(codes.tolist()):
        if c < 0:
            new.append(0)
            continue
        if c not in order:
            order.append(c)
            first.append(i)
        new.append(order.index(c))
    return order, first, new


@pytest.mark.parametrize("seed", range(20))
def test_first_seen_against_a_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 70))
    n = int(rng.integers(0, 3000))
    codes = rng.integers(-1 if seed % 2 else 0, k, n).astype(np.int32)
    if seed % 5 == 0:
        codes = np.sort(codes)
    order, first, new = first_seen(codes, k)
    want = _first_seen_oracle(codes)
    assert order.tolist() == want[0]
    assert first.tolist() == want[1]
    assert new.tolist() == want[2]


def test_first_seen_refuses_codes_outside_the_dictionary() -> None:
    with pytest.raises(IndexError):
        first_seen(np.array([0, 3], np.int32), 3)
    order, first, new = first_seen(np.array([-1, -1], np.int32), 0)
    assert order.size == first.size == 0 and new.tolist() == [0, 0]


@pytest.mark.parametrize("n", [0, 1, 2, 1000, 70_000])
def test_counters_delta_encoded_uncompressed_and_exact(tmp_path, n: int) -> None:
    """Every uint64 column (the counters) is delta-encoded, without compression, and reads
    back exactly: zero, the maximum, wild jumps between rows (deltas that wrap); the other
    columns zstd; every page checksummed (what verify and the readers check)."""
    rng = np.random.default_rng(n)
    top = np.iinfo(np.uint64).max
    wild = rng.integers(0, top, n, dtype=np.uint64, endpoint=True)
    wild[::3] = top
    wild[1::3] = 0
    t = pa.table(
        {
            "region": _coded(NAMES["region"], rng.integers(0, 5, n).astype(np.int32)),
            "bytes": pa.array(wild, pa.uint64()),
            "flows": pa.array(np.arange(n, dtype=np.uint64), pa.uint64()),
            "hhi": pa.array(rng.random(n)),
            "asn": pa.array(rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)),
        }
    )
    path = tmp_path / "t.parquet"
    cube._write_parquet(t, path)
    back = pq.read_table(path)
    assert back.column("bytes").to_pylist() == wild.tolist()
    assert back.column("flows").to_pylist() == list(range(n))
    assert back.column("region").to_pylist() == t.column("region").cast(pa.string()).to_pylist()
    assert back.schema.field("bytes").type == pa.uint64()
    meta = pq.read_metadata(path)
    if n == 0:  # no pages to encode
        return
    for g in range(meta.num_row_groups):
        for i in range(meta.num_columns):
            col = meta.row_group(g).column(i)
            if col.path_in_schema in ("bytes", "flows"):
                assert "DELTA_BINARY_PACKED" in col.encodings
                assert col.compression == "UNCOMPRESSED"
            else:
                assert "DELTA_BINARY_PACKED" not in col.encodings
                assert col.compression == "ZSTD"
    # a flipped bit in a counter's page is a checksum error, not a wrong number
    data = bytearray(path.read_bytes())
    at = (
        meta.row_group(0).column(1).data_page_offset
        + meta.row_group(0).column(1).total_compressed_size
        - 2
    )
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="checksum"):
        pq.read_table(path, page_checksum_verification=True)


def test_cubes_written_the_old_way_still_open(tmp_path) -> None:
    """A cube whose files were written before (zstd over every column, the counters plain)
    opens to the same frames as one written now."""
    from flowatlas.engine.build import build_cube
    from flowatlas.engine.cube import open_cube
    from flowatlas.synth import synthesize

    synthesize(tmp_path / "a", records=20_000, days=10, start="2025-09-15", seed=3)
    build_cube(tmp_path / "a", tmp_path / "new", workers=0)
    old = tmp_path / "old"
    old.mkdir()
    for f in (tmp_path / "new").iterdir():
        if f.suffix != ".parquet":
            (old / f.name).write_bytes(f.read_bytes())
            continue
        pq.write_table(
            pq.read_table(f),
            old / f.name,
            compression="zstd",
            compression_level=3,
            use_dictionary=["region", "network_type", "direction", "rollup", "grouping"],
            write_statistics=True,
            row_group_size=1 << 20,
            write_page_checksum=True,
        )
    assert (old / "cells.parquet").read_bytes() != (tmp_path / "new" / "cells.parquet").read_bytes()
    a, b = open_cube(tmp_path / "new"), open_cube(old)
    assert a.cells.equals(b.cells) and a.rollups.equals(b.rollups)
    assert a.link_cells().equals(b.link_cells())
    assert a.top_ips().equals(b.top_ips())
