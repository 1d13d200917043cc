"""CubeWriter: a cube's files written as their tables are made, swapped in whole or not at all."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from flowatlas.engine.cube import CubeWriter, _write_parquet


def _table(n: int) -> pa.Table:
    return pa.table({"x": pa.array(range(n), pa.uint64())})


def _cube(out, meta, tables) -> None:
    """A cube of ``tables`` (name: table), added in this order."""
    with CubeWriter(out) as writer:
        for name, table in tables.items():
            writer.add(name, table)
        writer.commit(meta)


def test_files_written_as_added_equal_files_written_alone(tmp_path) -> None:
    """Each file is what writing its table alone gives, whatever order the tables were
    added in, and cube.json names each file's size and SHA-256."""
    meta = {"format": "test"}
    tables = {"cells.parquet": _table(1000), "rollups.parquet": _table(10)}
    alone = tmp_path / "alone"
    alone.mkdir()
    for name, table in tables.items():
        _write_parquet(table, alone / name)
    _cube(tmp_path / "a", meta, tables)
    with CubeWriter(tmp_path / "b") as writer:
        writer.add("rollups.parquet", tables["rollups.parquet"])
        writer.add("top_ips.parquet", None)  # no such file
        writer.add("cells.parquet", tables["cells.parquet"])
        assert writer.commit(meta) == tmp_path / "b"
    for name in tables:
        want = (alone / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == want
        assert (tmp_path / "b" / name).read_bytes() == want
        files = json.loads((tmp_path / "b" / "cube.json").read_text())["files"]
        assert files[name]["size"] == len(want)
        assert files[name]["sha256"] == hashlib.sha256(want).hexdigest()
    assert (tmp_path / "a" / "cube.json").read_bytes() == (
        tmp_path / "b" / "cube.json"
    ).read_bytes()
    assert sorted(json.loads((tmp_path / "b" / "cube.json").read_text())["files"]) == [
        "cells.parquet",
        "rollups.parquet",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "alone", "b"]  # no leftovers


def test_an_error_before_the_commit_leaves_the_old_cube_and_nothing_else(tmp_path) -> None:
    out = tmp_path / "cube"
    _cube(out, {"v": 1}, {"cells.parquet": _table(5), "rollups.parquet": _table(5)})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RuntimeError, match="a bug while making a table"):
        with CubeWriter(out, overwrite=True) as writer:
            writer.add("cells.parquet", _table(100_000))
            raise RuntimeError("a bug while making a table")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube"]


def test_tables_handed_over_as_functions_are_made_on_the_pool(tmp_path) -> None:
    """A function's table gives the file the table itself gives; None gives no file."""
    meta = {"format": "test"}
    _cube(tmp_path / "a", meta, {"cells.parquet": _table(1000), "rollups.parquet": _table(10)})
    with CubeWriter(tmp_path / "b") as writer:
        writer.add("cells.parquet", lambda: _table(1000))
        writer.add("sketches.parquet", lambda: None)  # no such file, not in cube.json
        writer.add("rollups.parquet", _table(10))
        writer.commit(meta)
    for name in ("cells.parquet", "rollups.parquet", "cube.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "cells.parquet",
        "cube.json",
        "rollups.parquet",
    ]


def test_a_function_that_fails_fails_the_commit_and_leaves_nothing(tmp_path) -> None:
    def broken() -> pa.Table:
        raise RuntimeError("a bug while making a table")

    out = tmp_path / "cube"
    with pytest.raises(RuntimeError, match="a bug while making a table"):
        with CubeWriter(out) as writer:
            writer.add("cells.parquet", _table(100))
            writer.add("sketches.parquet", broken)
            writer.commit({"v": 1})
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
