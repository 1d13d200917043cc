"""flowatlas build: same cube however it runs; clear errors; no partial cube on failure."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import open_cube
from flowatlas.errors import InputError, OutputError
from flowatlas.synth import synthesize

CUBE_FILES = ("cells.parquet", "rollups.parquet", "cube.json")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("build") / "archive"
    synthesize(root, records=40_000, days=40, start="2025-09-15", seed=5)
    return root


def cube_bytes(path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in CUBE_FILES}


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "cube"
    build_cube(archive, out, workers=0, partitions=1)
    return cube_bytes(out)


@pytest.mark.parametrize("shuffle", ["memory", "disk"])
@pytest.mark.parametrize(
    ("workers", "partitions", "partition_rows"),
    [(0, 3, 5_000), (0, 7, 1_000_000), (1, 2, 2_000), (2, 4, 3_000), (2, 1, 50_000)],
)
def test_same_cube_byte_for_byte(
    archive, reference, tmp_path, workers, partitions, partition_rows, shuffle, monkeypatch
):
    import flowatlas.engine.workdir as workdir

    saved = []
    real_save = workdir.WorkDir.save_map
    monkeypatch.setattr(
        workdir.WorkDir, "save_map", lambda self, *a: saved.append(1) or real_save(self, *a)
    )
    out = tmp_path / "cube"
    build_cube(
        archive,
        out,
        workers=workers,
        partitions=partitions,
        partition_rows=partition_rows,
        shuffle=shuffle,
    )
    assert cube_bytes(out) == reference
    assert bool(saved) == (shuffle == "disk")  # the shuffle went where it was asked to
    assert not (tmp_path / ".cube.work").exists()


def test_available_memory_is_psutils_without_importing_it(monkeypatch):
    """MemAvailable from /proc/meminfo is psutil's number (within what changed between the
    two reads); without /proc/meminfo, psutil gives it."""
    import psutil

    from flowatlas.engine import build as build_module

    ours, theirs = build_module.available_memory(), psutil.virtual_memory().available
    assert abs(ours - theirs) < 256 << 20
    monkeypatch.setattr(build_module, "MEMINFO", "/nonexistent/meminfo")
    assert abs(build_module.available_memory() - psutil.virtual_memory().available) < 256 << 20


def test_where_the_shuffle_goes():
    from flowatlas.engine.build import shuffle_on_disk
    from flowatlas.errors import ConfigError

    assert not shuffle_on_disk("auto", 1_000)  # a small local build: memory
    assert shuffle_on_disk("auto", 10**15)  # more than memory holds: disk
    assert shuffle_on_disk("auto", 1_000, processes=True)  # worker processes: disk
    assert not shuffle_on_disk("auto", 10**15, scheduler="tcp://h:8786")  # remote workers
    assert shuffle_on_disk("auto", 1_000, keep_state=True)
    assert shuffle_on_disk("auto", 1_000, scheduler="tcp://h:8786", work_dir="/shared/w")
    assert shuffle_on_disk("disk", 1_000) and not shuffle_on_disk("memory", 10**15)
    with pytest.raises(ConfigError, match="keeping the build state"):
        shuffle_on_disk("memory", 1_000, keep_state=True)
    with pytest.raises(ConfigError, match="work directory"):
        shuffle_on_disk("memory", 1_000, work_dir="w")
    with pytest.raises(ConfigError, match="auto, memory, disk"):
        shuffle_on_disk("ram", 1_000)


def test_same_cube_with_four_workers(archive, reference, tmp_path):
    build_cube(
        archive, tmp_path / "cube", workers=4, partitions=8, partition_rows=4_000, processes=True
    )
    assert cube_bytes(tmp_path / "cube") == reference


@pytest.mark.parametrize("how", ["cache of 2 entries", "every row split in two"])
def test_map_side_repeats_left_unfolded_change_nothing(archive, tmp_path, monkeypatch, how):
    """A map task folds a (cell, IP) pair's repeats only while they stay in its small cache.
    With a tiny cache, or with every row of the map output split into two rows that share its
    volume, pairs reach the reducer several times: every file of the cube (top lists, HHI and
    sketches included) is still the same."""
    import numpy as np

    from flowatlas.engine import pipeline
    from flowatlas.kernels import distinct

    build_cube(archive, tmp_path / "want", workers=0, partitions=3, partition_rows=7_000)
    if how.startswith("cache"):
        monkeypatch.setattr(distinct, "CACHE_BITS", 1)
    else:
        real = pipeline.map_task

        def split(fragments, plan):
            result = real(fragments, plan)
            for p in result.pieces:
                half = p.vol // np.uint64(2)
                p.cell, p.hi, p.lo = (np.concatenate([a, a[::-1]]) for a in (p.cell, p.hi, p.lo))
                p.vol = np.concatenate([half, (p.vol - half)[::-1]])
            result.rows = None  # the work directory joins the pieces instead
            return result

        monkeypatch.setattr(pipeline, "map_task", split)
    build_cube(archive, tmp_path / "got", workers=0, partitions=3, partition_rows=7_000)
    names = sorted(p.name for p in (tmp_path / "want").iterdir() if p.is_file())
    assert {"top_ips.parquet", "top_asns.parquet", "sketches.parquet", "links.parquet",
            "geo.parquet"} <= set(names)  # fmt: skip
    for name in names:
        assert (tmp_path / "want" / name).read_bytes() == (tmp_path / "got" / name).read_bytes(), (
            name
        )


def test_accounting_and_metadata(archive, tmp_path):
    s = build_cube(archive, tmp_path / "cube", workers=0)
    assert s.records == 40_000 == s.cubed and not s.quarantined
    cube = open_cube(tmp_path / "cube")
    meta = cube.meta
    assert meta["records"] == {"read": 40_000, "cubed": 40_000, "quarantined": {}}
    assert int(cube.cells["flows"].sum()) == 40_000
    assert meta["totals"]["bytes"] == int(cube.cells["bytes"].sum())
    assert meta["archive"]["rows"] == 40_000 and len(meta["archive"]["files"]) == 40
    assert meta["prefix_table"]["digest"] and meta["prefix_table"]["sources"]
    assert meta["config"]["regions"][0]["name"] == "US-West"
    # rollup sums agree with the cells, for every grouping
    rollups = cube.rollups[cube.rollups["rollup"] == "all"]
    for _, grp in rollups.groupby("grouping"):
        assert int(grp["bytes"].sum()) == meta["totals"]["bytes"]
        assert int(grp["flows"].sum()) == 40_000
    # distinct counts: coarser groupings never exceed the sum of finer ones
    per_region = cube.rollup(("region",)).set_index("region")["uniques"]
    per_cell = (
        cube.rollup(("region", "network_type")).groupby("region", observed=True)["uniques"].sum()
    )
    assert (per_region <= per_cell.reindex(per_region.index)).all()


def overflowing_copy(archive, tmp_path, every: int = 0):
    """A copy of ``archive`` whose first file has records whose volume overflows 64 bits
    once scaled (bytes 2^63 at a sampling rate of 1000): the first such record, or with
    ``every`` each ``every``-th of them. Returns (the copy, their row numbers)."""
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    f = sorted(copy.rglob("*.parquet"))[0]
    t = pq.read_table(f)
    meta = t.schema.metadata
    b = t.column("bytes").to_pylist()
    r = t.column("sampling_rate").to_pylist()
    bad = [i for i, x in enumerate(r) if x == 1000]
    bad = bad[::every] if every else bad[:1]
    for i in bad:
        b[i] = 2**63  # x 1000 overflows 64 bits
    t = t.set_column(t.schema.get_field_index("bytes"), "bytes", pa.array(b, pa.uint64()))
    pq.write_table(t.replace_schema_metadata(meta), f)
    return copy, bad


def test_overflowing_volume_is_quarantined_and_counted(archive, tmp_path):
    copy, _ = overflowing_copy(archive, tmp_path)
    s = build_cube(copy, tmp_path / "cube", workers=0)
    assert s.quarantined == {"volume_overflow": 1}
    assert s.cubed == s.records - 1
    assert json.loads((tmp_path / "cube" / "cube.json").read_text())["records"]["quarantined"]


@pytest.mark.parametrize("batch_rows", [1, 97, 1_000])
def test_map_tasks_read_in_batches_give_the_same_cube(archive, tmp_path, monkeypatch, batch_rows):
    """A map task decodes and classifies its fragments a batch of rows at a time
    (``MAP_BATCH_ROWS``): batches of any size, quarantined records in several of them, give
    the cube and accounting of whole fragments, byte for byte."""
    from flowatlas.engine import pipeline

    copy, bad = overflowing_copy(archive, tmp_path, every=7)
    assert len(bad) >= 3 and bad[-1] > 100
    sizes = {"whole": 0, "batched": batch_rows}
    stats = {}
    for name, rows in sizes.items():
        monkeypatch.setattr(pipeline, "MAP_BATCH_ROWS", rows)
        stats[name] = build_cube(copy, tmp_path / name, workers=0, partitions=3,
                                 partition_rows=5_000)  # fmt: skip
    assert stats["batched"].quarantined == {"volume_overflow": len(bad)}
    assert (stats["batched"].records, stats["batched"].cubed) == (
        stats["whole"].records,
        stats["whole"].cubed,
    )
    assert cube_bytes(tmp_path / "batched") == cube_bytes(tmp_path / "whole")


def test_missing_archive(tmp_path):
    with pytest.raises(InputError, match=r"nope: no such file or directory"):
        build_cube(tmp_path / "nope", tmp_path / "cube")


def test_empty_archive(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="archive is empty"):
        build_cube(tmp_path / "empty", tmp_path / "cube")


def test_wrong_schema(tmp_path):
    (tmp_path / "a").mkdir()
    pq.write_table(pa.table({"when": [1], "what": ["x"]}), tmp_path / "a" / "f.parquet")
    with pytest.raises(InputError, match=r"f\.parquet: not a flow archive file"):
        build_cube(tmp_path / "a", tmp_path / "cube")


def test_unwritable_output(archive, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=r"afile"):
        build_cube(archive, tmp_path / "afile" / "cube", workers=0)
    (tmp_path / "notacube").mkdir()
    (tmp_path / "notacube" / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="is not a flowatlas cube"):
        build_cube(archive, tmp_path / "notacube", workers=0, overwrite=True)
    assert (tmp_path / "notacube" / "precious.txt").exists()


def test_existing_cube_needs_overwrite(archive, tmp_path, reference):
    build_cube(archive, tmp_path / "cube", workers=0)
    with pytest.raises(OutputError, match="already exists"):
        build_cube(archive, tmp_path / "cube", workers=0)
    build_cube(archive, tmp_path / "cube", workers=0, overwrite=True)
    assert cube_bytes(tmp_path / "cube") == reference


@pytest.mark.parametrize(("workers", "processes"), [(0, False), (2, False), (2, True)])
def test_failed_build_leaves_no_partial_cube(archive, tmp_path, workers, processes):
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    victim = sorted(copy.rglob("*.parquet"))[20]
    raw = bytearray(victim.read_bytes())
    raw[64:2000] = b"\xff" * 1936  # the footer survives; the row group does not
    victim.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=rf"{victim.name}: row group\(s\) 0: unreadable"):
        build_cube(copy, tmp_path / "cube", workers=workers, processes=processes)
    assert not (tmp_path / "cube").exists()
    # no partial cube; what was done waits, hidden, for the build to be run again
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["archive"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] in ([], [".cube.work"])


def test_file_vanishing_during_build_is_named(archive, tmp_path, monkeypatch):
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    import flowatlas.engine.build as b

    real = b.open_archive

    def open_then_delete(path):
        arch = real(path)
        arch.files[3].path.unlink()
        return arch

    monkeypatch.setattr(b, "open_archive", open_then_delete)
    with pytest.raises(InputError, match="vanished during the build"):
        build_cube(copy, tmp_path / "cube", workers=0)
    assert not (tmp_path / "cube").exists()


def test_unreachable_scheduler(archive, tmp_path, monkeypatch):
    from flowatlas.engine import execution
    from flowatlas.engine.execution import SchedulerError

    monkeypatch.setattr(execution, "CONNECT_TIMEOUT", "2s")
    with pytest.raises(
        SchedulerError, match=r"cannot reach Dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        build_cube(archive, tmp_path / "cube", scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "cube").exists()


def test_file_changing_during_build_is_named(archive, tmp_path, monkeypatch):
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    import flowatlas.engine.build as b

    real = b.open_archive

    def open_then_rewrite(path):
        arch = real(path)
        f = arch.files[5].path
        t = pq.read_table(f)
        pq.write_table(t.slice(0, t.num_rows - 1).replace_schema_metadata(t.schema.metadata), f)
        return arch

    monkeypatch.setattr(b, "open_archive", open_then_rewrite)
    with pytest.raises(InputError, match="file changed during the build"):
        build_cube(copy, tmp_path / "cube", workers=0)
    assert not (tmp_path / "cube").exists()


def test_a_subset_of_rollups_gives_the_same_rows(archive, tmp_path) -> None:
    """Each rollup level is summed from the finest one configured, so skipping levels (and
    listing them out of order) must not change the rows of those that remain."""
    import dataclasses

    from flowatlas.config import load_config

    cfg = load_config(archive / "flowatlas.toml")
    subset = dataclasses.replace(cfg, cube=dataclasses.replace(cfg.cube, rollups=("all", "month")))
    build_cube(archive, tmp_path / "full", workers=0)
    build_cube(archive, tmp_path / "sub", workers=0, config=subset)
    full = pq.read_table(tmp_path / "full" / "rollups.parquet").to_pandas()
    sub = pq.read_table(tmp_path / "sub" / "rollups.parquet").to_pandas()
    assert set(sub["rollup"]) == {"all", "month"}
    want = full[full["rollup"].isin(["all", "month"])]
    key = [
        "rollup",
        "grouping",
        "period_start",
        "region",
        "network_type",
        "direction",
        "ip_version",
    ]
    want = want.sort_values(key, na_position="first").reset_index(drop=True)
    got = sub.sort_values(key, na_position="first").reset_index(drop=True)
    assert got.drop(columns=["rollup"]).equals(want.drop(columns=["rollup"]))


def test_work_dir_that_is_not_ours_is_left_alone(archive, reference, tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    with pytest.raises(OutputError, match="not a flowatlas work directory"):
        build_cube(archive, tmp_path / "cube", workers=0, work_dir=precious)
    assert (precious / "chapter1.tex").read_text() == "years of work"
    assert not (tmp_path / "cube").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    build_cube(archive, tmp_path / "cube", workers=0, work_dir=empty)
    assert cube_bytes(tmp_path / "cube") == reference and not empty.exists()


@pytest.mark.parametrize("seed", range(6))
def test_combiner_index_of_sorted_runs_equals_searchsorted(seed):
    """Sketch entries come sorted with long runs of one key: looking each run up once gives
    exactly the per-entry positions (and unsorted or short inputs take the plain path)."""
    import numpy as np

    from flowatlas.engine.combine import _index

    rng = np.random.default_rng(seed)
    universe = np.unique(rng.integers(0, 1 << 40, size=int(rng.integers(1, 300))))
    for n in (0, 1, 7, 5_000):
        keys = np.sort(rng.choice(universe, size=n))
        np.testing.assert_array_equal(_index(universe, keys, "t"), np.searchsorted(universe, keys))
        shuffled = rng.permutation(keys)
        np.testing.assert_array_equal(
            _index(universe, shuffled, "t"), np.searchsorted(universe, shuffled)
        )
    with pytest.raises(AssertionError, match="keys without volume"):
        _index(universe, np.sort(np.r_[np.repeat(universe, 5), universe[-1] + 1]), "t")


@pytest.mark.parametrize("workers,shuffle", [(0, "memory"), (2, "memory"), (2, "disk")])
def test_links_and_geo_are_handed_over_before_the_first_reducer_is_folded(
    archive, tmp_path, monkeypatch, workers, shuffle
):
    """The tables that depend on the maps only go to the writer before any partition's
    counts reach the combiner (so they are written while the reducers run)."""
    from flowatlas.engine import build, combine

    events: list[str] = []
    real_tables, real_add = build._write_map_tables, combine.Combiner.add

    def tables(*args):
        events.append("maps")
        return real_tables(*args)

    def add(self, counts):
        events.append("fold")
        return real_add(self, counts)

    monkeypatch.setattr(build, "_write_map_tables", tables)
    monkeypatch.setattr(combine.Combiner, "add", add)
    build_cube(archive, tmp_path / "c", workers=workers, shuffle=shuffle)
    assert events[0] == "maps" and events.count("maps") == 1 and "fold" in events


def test_iso_utc_as_arrow_gives_it():
    """cube.json's time range is written without Arrow's datetime conversion: the same text
    as ``.as_py().isoformat()`` of a UTC timestamp scalar, before 1970, on whole seconds and
    with microseconds, at the ends of Python's datetime range."""
    import numpy as np

    from flowatlas.engine.build import _iso_utc

    rng = np.random.default_rng(7)
    lo, hi = -62_135_596_800_000_000, 253_402_300_799_999_999  # 0001-01-01 .. 9999-12-31
    values = [0, -1, 1, 3_600_000_000, lo, hi, 1_700_000_000_000_000, -5]
    values += [int(v) for v in rng.integers(lo, hi, 200)]
    values += [int(v) * 1_000_000 for v in rng.integers(-(2**31), 2**31, 50)]
    ts = pa.timestamp("us", tz="UTC")
    for v in values:
        assert _iso_utc(v) == pa.scalar(v, ts).as_py().isoformat(), v


@pytest.mark.parametrize("workers", [0, 2])
def test_sketches_dense_or_long_form_same_bytes(archive, tmp_path, monkeypatch, workers):
    """The combiner keeps a small build's sketches as long-form entries and a large one's as
    dense registers (DENSE_BYTES_PER_RECORD): both give every cube file byte for byte."""
    import flowatlas.engine.combine as combine

    kept = []
    real_add = combine.Combiner.add

    def add(self, c):
        real_add(self, c)
        kept.append(self.registers is None)

    monkeypatch.setattr(combine.Combiner, "add", add)
    cubes = {}
    for per_record in (0, 1 << 40):  # never dense; always dense
        monkeypatch.setattr(combine, "DENSE_BYTES_PER_RECORD", per_record)
        out = tmp_path / f"cube-{per_record}"
        build_cube(archive, out, workers=workers, partitions=3)
        cubes[per_record] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        assert set(kept) == {per_record == 0}  # the path asked for was taken
        kept.clear()
    assert "sketches.parquet" in cubes[0]
    assert cubes[0] == cubes[1 << 40]
