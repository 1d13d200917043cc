"""How a prefix table reaches a Dask cluster's worker processes (engine/execution.py's
send_tables): by its file's path where every worker sees that file, else scattered once;
never inside the task graph (distributed's "Sending large graph" warning, a full
prefix-to-ASN table in every build's graph)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from test_lpm import compile_prefixes, probe_addresses, random_prefixes

from flowatlas.classify import table as table_module
from flowatlas.classify.table import PrefixTable, file_digest
from flowatlas.errors import InputError

CUBE_FILES = ("cells.parquet", "rollups.parquet", "cube.json")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(5)
    prefixes = random_prefixes(rng, 800)
    table, _ = compile_prefixes(prefixes)
    hi, lo = probe_addresses(prefixes, rng, 5_000)
    path = table.save(tmp_path_factory.mktemp("table") / "t.fatable")
    return path, table.lookup(hi, lo), hi, lo


def test_a_table_by_path_pickles_as_its_path_and_opens_once_a_process(saved, tmp_path):
    path, want, hi, lo = saved
    opened = PrefixTable.load(path)
    sent = opened.by_path()
    blob = pickle.dumps(sent)
    assert len(blob) < 1_000 and str(path).encode() in blob  # no array in it
    assert len(pickle.dumps(opened)) > opened.starts_hi.nbytes  # unlike a plain pickle
    assert pickle.loads(blob) is sent  # this process: the same table, not opened again
    assert file_digest(path) == opened.digest
    # another process maps the file (and pickles it on by path again)
    code = (
        "import pickle, sys, numpy as np\n"
        "t = pickle.load(sys.stdin.buffer)\n"
        "assert t.__dict__['_by_path'] and 'index' in t.__dict__\n"
        "assert len(pickle.dumps(t)) < 1000\n"
        f"hi, lo = np.load({str(tmp_path / 'a.npz')!r}).values()\n"
        "sys.stdout.buffer.write(t.lookup(hi, lo).tobytes())\n"
    )
    np.savez(tmp_path / "a.npz", hi=hi, lo=lo)
    p = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    np.testing.assert_array_equal(np.frombuffer(p.stdout, np.int32), want)
    with pytest.raises(ValueError, match="opened from its file"):
        PrefixTable(opened.starts_hi, opened.starts_lo, opened.values, opened.networks).by_path()


def test_a_table_by_path_is_an_error_where_the_file_is_gone_or_another(saved, tmp_path):
    path, *_ = saved
    copy = tmp_path / "copy.fatable"
    copy.write_bytes(path.read_bytes())
    blob = pickle.dumps(PrefixTable.load(copy).by_path())
    table_module._OPENED.clear()  # as in a worker process that has not opened it
    other = compile_prefixes(["10.0.0.0/8", "2001:db8::/32"])[0].save(tmp_path / "other.fatable")
    os.replace(other, copy)
    assert file_digest(copy) != file_digest(path)
    with pytest.raises(InputError, match="changed while the build was running"):
        pickle.loads(blob)
    copy.unlink()
    assert file_digest(copy) is None
    with pytest.raises(InputError, match="every Dask worker must see"):
        pickle.loads(blob)
    (tmp_path / "junk").write_bytes(b"FATABLE\x00" + b"\xff" * 40)
    assert file_digest(tmp_path / "junk") is None and file_digest(tmp_path) is None


@pytest.fixture(scope="module")
def build_inputs(tmp_path_factory):
    from flowatlas.classify import load_table
    from flowatlas.config import load_config
    from flowatlas.engine.build import build_cube
    from flowatlas.synth import synthesize

    root = tmp_path_factory.mktemp("to-workers")
    archive = root / "archive"
    synthesize(archive, records=20_000, days=2, start="2025-09-15", seed=8)  # a small graph
    path = load_table(load_config(archive / "flowatlas.toml")).save(root / "w.fatable")
    build_cube(archive, root / "eager", workers=0, table=path)
    return archive, path, {f: (root / "eager" / f).read_bytes() for f in CUBE_FILES}


def _cluster_build(archive, out, table, forget_file=None):
    """Build on a real local cluster of two worker processes, with distributed's large
    graph warning set below the table's pickled size (84 kB; the plan without it: 11 kB;
    the map tasks: about 5 kB an archive file); return the warnings and what each worker
    opened by path."""
    import dask
    from distributed import Client, LocalCluster

    from flowatlas.engine.build import build_cube

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    opened: dict[str, list[str]] = {}

    def look(stage: str, done: int, total: int) -> None:
        """What each worker holds opened by path, while the plan is in use (the reducers)."""
        if stage == "reduce" and not opened:
            opened.update(client.run(lambda: sorted(p for p, _ in table_module._OPENED)))

    try:
        if forget_file is not None:
            forget_file()
        with (
            dask.config.set({"distributed.admin.large-graph-warning-threshold": "40kB"}),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            build_cube(
                archive, out, scheduler=cluster.scheduler_address, table=table, progress=look
            )
    finally:
        client.close()
        cluster.close()
    assert opened, "never looked"
    return [str(w.message) for w in caught], opened


def test_worker_processes_map_the_table_file_by_path(build_inputs, tmp_path):
    """Workers that see the file open it themselves; nothing large is in the graph; the cube
    is the one-process build's, byte for byte."""
    archive, path, want = build_inputs
    messages, opened = _cluster_build(archive, tmp_path / "cube", path)
    assert not [m for m in messages if "large graph" in m], messages
    # (a worker that has run no task since the plan's has not needed it yet)
    assert {p for paths in opened.values() for p in paths} == {str(path.resolve())}, opened
    assert {f: (tmp_path / "cube" / f).read_bytes() for f in CUBE_FILES} == want


def test_workers_without_the_file_get_the_table_scattered(build_inputs, tmp_path):
    """A table whose file the workers cannot open (here: gone once the client opened it,
    as on a remote cluster without it) is sent to them outside the graph, and the cube is
    still the one-process build's."""
    archive, path, want = build_inputs
    moved = tmp_path / "only-here.fatable"
    moved.write_bytes(path.read_bytes())
    table = PrefixTable.load(moved)
    messages, opened = _cluster_build(archive, tmp_path / "cube", table, forget_file=moved.unlink)
    assert not [m for m in messages if "large graph" in m], messages
    assert all(not o for o in opened.values()), opened  # nothing opened by path
    got = {f: (tmp_path / "cube" / f).read_bytes() for f in CUBE_FILES}
    # (cube.json names the table's file: here the one the client opened)
    got["cube.json"] = got["cube.json"].replace(str(moved).encode(), str(path).encode())
    assert got == want
