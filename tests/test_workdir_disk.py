"""The disk shuffle's own parts: the archive's pages dropped once mapped (where the archive
and its shuffle exceed memory), and the rows files' encoding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowatlas.engine import build as build_mod
from flowatlas.engine import workdir
from flowatlas.engine.build import build_cube
from flowatlas.io.archive import open_archive
from flowatlas.synth import synthesize

CUBE_FILES = ("cells.parquet", "rollups.parquet", "cube.json")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("disk") / "a"
    synthesize(root, records=20_000, days=4, seed=3)
    return root


def _advice(monkeypatch) -> list[tuple[str, int, int, int]]:
    """Calls of os.posix_fadvise, recorded as (path, offset, length, advice)."""
    calls: list[tuple[str, int, int, int]] = []
    real = os.posix_fadvise

    def record(fd, offset, length, advice):
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length, advice))
        return real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", record)
    return calls


def _covered(calls, path: str) -> set[int]:
    return {b for p, a, n, _ in calls if p == path for b in range(a, a + n)}


def test_row_groups_read_are_dropped_and_only_they(tmp_path, monkeypatch):
    """Each fragment's row groups, consecutive ones in one call, and no byte of the file's
    other row groups (another task may be reading them) nor of its footer."""
    path = tmp_path / "f.parquet"
    table = pa.table({"a": np.arange(10_000, dtype=np.int64), "b": np.arange(10_000) % 7})
    pq.write_table(table, path, row_group_size=1_000)
    md = pq.ParquetFile(path).metadata
    spans = [workdir._row_group_span(md.row_group(i)) for i in range(md.num_row_groups)]
    assert spans[0][0] == 4 and all(a < b for a, b in spans)

    class Frag:
        def __init__(self, groups, metadata=md):
            self.path, self.row_groups, self.metadata = str(path), tuple(groups), metadata

    calls = _advice(monkeypatch)
    workdir.drop_read_pages([Frag([2, 3, 4, 7]), Frag([9]), Frag([5], metadata=None)])
    assert len(calls) == 3 and {c[3] for c in calls} == {os.POSIX_FADV_DONTNEED}
    want = {b for i in (2, 3, 4, 7, 9) for b in range(*spans[i])}
    assert _covered(calls, str(path)) == want
    calls.clear()
    workdir.drop_read_pages([Frag([])])
    assert calls == []


def test_a_larger_than_memory_build_drops_every_row_group_it_maps(archive, tmp_path, monkeypatch):
    """Forced on (the archive is small), the disk shuffle drops every row group of the
    archive once, the cube unchanged; off (it fits in memory: the default here) none."""
    want = build_cube(archive, tmp_path / "ref", workers=0).out
    arch = open_archive(archive)
    calls = _advice(monkeypatch)
    build_cube(archive, tmp_path / "off", workers=2, shuffle="disk")
    assert calls == []
    monkeypatch.setattr(build_mod, "_larger_than_memory", lambda source: True)
    out = build_cube(archive, tmp_path / "on", workers=2, shuffle="disk", partition_rows=1_000)
    for f in arch.files:
        md = f.metadata
        groups = {
            b
            for i in range(md.num_row_groups)
            for b in range(*workdir._row_group_span(md.row_group(i)))
        }
        assert _covered(calls, str(Path(f.path).resolve())) == groups
    for name in CUBE_FILES:
        assert (out.out / name).read_bytes() == (want / name).read_bytes()


def test_larger_than_memory_counts_the_archive_and_its_shuffle(archive, monkeypatch):
    arch = open_archive(archive)
    size = sum(f.size for f in arch.files) + arch.num_rows * build_mod.SHUFFLE_ROW_BYTES
    monkeypatch.setattr(build_mod, "available_memory", lambda: size)
    assert not build_mod._larger_than_memory(arch)
    monkeypatch.setattr(build_mod, "available_memory", lambda: size - 1)
    assert build_mod._larger_than_memory(arch)
