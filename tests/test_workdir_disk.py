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
from flowatlas.kernels.shuffle import decode_blocks, encode_rows
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


# --------------------------------------------------------------------------- narrow rows

V4 = np.uint64(0xFFFF_0000_0000)
I64 = np.iinfo(np.int64)


def _rows(rng, n: int, parts: int, kind: str = "mixed", cells=None, vols=None):
    """Random partition-ordered rows: (cell, hi, lo, vol, bounds)."""
    v4 = {"v4": np.ones(n, bool), "v6": np.zeros(n, bool)}.get(kind, rng.random(n) < 0.6)
    hi = np.where(v4, 0, rng.integers(0, 2**64, n, dtype=np.uint64)).astype(np.uint64)
    lo32 = rng.integers(0, 2**32, n, dtype=np.uint64)
    lo = np.where(v4, V4 | lo32, rng.integers(0, 2**64, n, dtype=np.uint64)).astype(np.uint64)
    if kind == "near v4":  # IPv6 addresses one bit away from the IPv4-mapped form
        odd = rng.integers(0, 3, n)
        hi = np.where(odd == 0, np.uint64(1), np.uint64(0)).astype(np.uint64)
        lo = np.where(odd == 1, np.uint64(0xFFFE_0000_0000), V4) | lo32
        hi[odd == 2] = 0
    cell = rng.integers(1 << 40, (1 << 40) + (1 << 20), n) if cells is None else cells
    vol = rng.integers(0, 2**40, n, dtype=np.uint64) if vols is None else vols
    cuts = np.sort(rng.integers(0, n + 1, parts - 1)) if parts > 1 else np.empty(0, np.int64)
    bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    return np.asarray(cell, np.int64), hi, lo, np.asarray(vol, np.uint64), bounds


def _decode_part(tasks, j):
    """Partition j of several encoded tasks, decoded as a reducer does (blocks joined)."""
    blocks = [t[0][t[1][j] : t[1][j + 1]] for t in tasks]
    starts = np.concatenate([[0], np.cumsum([b.size for b in blocks])]).astype(np.int64)
    buf = np.empty(int(starts[-1]) // 8, np.uint64).view(np.uint8)
    for b, a in zip(blocks, starts, strict=False):
        buf[a : a + b.size] = b
    rows = [int(t[4][j + 1] - t[4][j]) for t in tasks]
    return decode_blocks(buf, starts, rows, [t[2][j] for t in tasks], [t[3] for t in tasks])


def _round_trip(tasks_rows):
    tasks = [(*encode_rows(*r), r[4]) for r in tasks_rows]
    parts = tasks_rows[0][4].size - 1
    for j in range(parts):
        got = _decode_part(tasks, j)
        for k in range(4):
            want = np.concatenate([r[k][r[4][j] : r[4][j + 1]] for r in tasks_rows])
            assert got[k].dtype == want.dtype and np.array_equal(got[k], want), (j, k)
    return tasks


@pytest.mark.parametrize("kind", ["mixed", "v4", "v6", "near v4"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_narrow_rows_round_trip(kind, seed):
    rng = np.random.default_rng(seed)
    tasks = _round_trip([_rows(rng, int(rng.integers(50, 3000)), 7, kind) for _ in range(4)])
    for blocks, nb, n6, widths, _bounds in tasks:
        assert nb[0] == 0 and nb[-1] == blocks.size and np.all(nb % 8 == 0)
        assert widths[1:] == (4, 2)  # 20-bit cell spans, 40-bit volumes
        if kind == "v4":
            assert not n6.any()


@pytest.mark.parametrize(
    ("cells", "vols", "widths"),
    [
        ((0, 2**32 - 1), (0, 2**32 - 1), (4, 0)),
        ((5, 2**32 + 5), (0, 2**32), (8, 2)),
        ((-(2**40), -(2**40) + 2**32 - 1), (2**48 - 1, 0), (4, 2)),
        ((I64.min, I64.max), (2**48, 1), (8, 4)),
        ((I64.max, I64.max), (2**64 - 1, 2**64 - 1), (4, 4)),
        ((I64.min, -1), (0, 0), (8, 0)),
    ],
)
def test_narrow_rows_at_their_widths_limits(cells, vols, widths):
    rng = np.random.default_rng(7)
    n = 500
    lo_c, hi_c = cells
    cell = np.array([lo_c, hi_c] * (n // 2), dtype=np.int64)
    vol = np.array([vols[0], vols[1]] * (n // 2), dtype=np.uint64)
    tasks = _round_trip([_rows(rng, n, 5, "mixed", cell, vol)])
    assert tasks[0][3][1:] == widths


def test_empty_tasks_and_partitions():
    rng = np.random.default_rng(3)
    empty = _rows(rng, 0, 4)
    tasks = _round_trip([empty, _rows(rng, 10, 4), empty])
    assert tasks[0][0].size == 0 and np.all(tasks[0][1] == 0)
    one = _rows(rng, 50, 6)
    one[4][:] = [0, 0, 0, 50, 50, 50, 50]  # every row in partition 2
    _round_trip([one])


def test_a_damaged_block_is_an_error():
    rng = np.random.default_rng(4)
    blocks, nb, n6, widths = encode_rows(*_rows(rng, 100, 1, "mixed"))
    rows = [100]
    decode_blocks(blocks, nb, rows, n6, [widths])
    for bad in (
        dict(rows=[101]),
        dict(n6=[n6[0] + 1]),
        dict(n6=[101]),
        dict(widths=[(widths[0], 8, widths[2])]),
        dict(widths=[(widths[0], 3, widths[2])]),
        dict(starts=np.array([0, blocks.size - 8])),
    ):
        args = dict(buf=blocks, starts=nb, rows=rows, n6=n6, widths=[widths]) | bad
        with pytest.raises(ValueError, match="does not match"):
            decode_blocks(**args)


def test_work_dir_rows_round_trip(tmp_path):
    """What save_map writes, load_partition reads back: each partition's rows of every
    task, in task order, exactly (the reducers' input unchanged)."""
    from flowatlas.engine.pipeline import FragmentStats, MapResult, Piece

    rng = np.random.default_rng(5)
    parts = 6
    work = workdir.WorkDir(tmp_path / "w", {"plan": "p", "partitions": parts})
    keys = [f"t{i}" for i in range(5)]
    work.open(keys)
    made = []
    for i, k in enumerate(keys):
        cells = rng.integers(0, 2**33 if i == 3 else 2**20, 400) if i != 4 else None
        r = _rows(rng, 0 if i == 1 else 400, parts, "mixed", cells)
        made.append(r)
        res = MapResult(
            np.empty(0, np.int64), np.empty((0, 3), np.uint64), [], FragmentStats(),
            Piece(*r[:4]), r[4],
        )  # fmt: skip
        work.save_map(k, res)
    again = workdir.WorkDir(tmp_path / "w", {"plan": "p", "partitions": parts})
    assert again.open(keys) == len(keys)
    for j in range(parts):
        got = again.load_partition(keys[::-1] if j == 2 else keys, j)
        order = made[::-1] if j == 2 else made
        for k, f in enumerate(("cell", "hi", "lo", "vol")):
            want = np.concatenate([r[k][r[4][j] : r[4][j + 1]] for r in order])
            assert np.array_equal(getattr(got, f), want), (j, f)


def test_a_damaged_work_directory_is_one_clear_error(tmp_path):
    """A work directory whose files were truncated, removed or garbled (by hand, a full
    disk's leftovers) fails to load as an InputError naming it and saying what to do, from
    each of its readers: never a traceback of OSError, ValueError or BadZipFile."""
    from flowatlas.engine.pipeline import Counts, FragmentStats, MapResult, Piece
    from flowatlas.errors import InputError

    rng = np.random.default_rng(6)
    parts = 3
    work = workdir.WorkDir(tmp_path / "w", {"plan": "p", "partitions": parts})
    keys = ["a", "b"]
    work.open(keys)
    for k in keys:
        r = _rows(rng, 200, parts)
        heads = (np.empty(0, np.int64), np.empty((0, 3), np.uint64), [], FragmentStats())
        work.save_map(k, MapResult(*heads, Piece(*r[:4]), r[4]))
    empty = np.empty(0, np.int64)
    work.save_counts(0, Counts(empty, np.empty((0, 2), np.int64), {}, {}))
    root = tmp_path / "w"
    damaged = "damaged work directory .*remove it .*build again"

    (root / "map" / "b" / workdir.ROWS_FILE).write_bytes(b"short")
    with pytest.raises(InputError, match=damaged):
        work.load_partition(keys, 1)
    (root / "map" / "a" / "sums.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=damaged):
        work.load_map_head("a")
    (root / "map" / "b" / "stats.json").unlink()
    with pytest.raises(InputError, match=damaged):
        work.load_map_head("b")
    next(root.glob("reduce/*.npz")).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(InputError, match=damaged):
        work.load_counts(0)


def test_a_damaged_state_fails_an_incremental_build_in_one_line(tmp_path, capsys):
    """Through the command line: a --keep-state cube whose kept rows file was cut short,
    then an --incremental build: one line naming the state and the remedy, exit status 2."""
    from flowatlas.cli import main

    synthesize(tmp_path / "a", records=4_000, days=3, seed=2)
    args = ["build", str(tmp_path / "a"), "-o", str(tmp_path / "cube"), "-q", "--workers", "0"]
    assert main([*args, "--keep-state"]) == 0
    state = tmp_path / ".cube.state"
    rows = sorted(state.glob(f"map/*/{workdir.ROWS_FILE}"))[0]
    rows.write_bytes(rows.read_bytes()[:40])
    capsys.readouterr()
    assert main([*args, "--incremental"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowatlas: error: "), lines
    assert f"{state}: damaged work directory" in lines[0] and "build again" in lines[0]
