"""The map step's accumulation on a GPU: device hash tables equal the CPU kernels exactly.

The CUDA drivers (kernels/cuda_accumulate.py) run under numba's simulator in a subprocess
(``NUMBA_ENABLE_CUDASIM=1`` must be set before numba is imported), on small random and
adversarial inputs, and on a real GPU with ``--gpu``. The reduce step must not depend on the
order of the rows inside a map task's pieces (the device returns them in first-seen order,
the CPU grouped by address): a CPU test checks that directly.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from flowatlas.testing import run_script

DRIVERS = textwrap.dedent(
    """
    import numpy as np
    np.seterr(over="ignore")  # uint64 wrap-around is the hash, not an accident
    from numba import cuda
    from flowatlas.kernels import cuda_accumulate as A
    from flowatlas.kernels.accumulate import CounterOverflow, _GOLD, ip_hash, mix64
    from flowatlas.kernels.distinct import dedup_per_ip, dense_sums, key_ids

    N = {n}
    rng = np.random.default_rng(4)
    V4 = np.uint64(0xFFFF) << np.uint64(32)

    def dev(*arrays):
        return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]

    def cpu(key, hi, lo, vol, pk):
        cid, cells = key_ids(key)
        sums = dense_sums(cid, vol, pk, cells.size)
        rep, ucid, uvol = dedup_per_ip(hi, lo, cid, vol, cells.size)
        o = np.argsort(rep, kind="stable")  # the device's order: first-seen rows
        return cells, sums, rep[o], cells[ucid[o]], uvol[o]

    def check(name, key, hi, lo, vol, pk):
        key = np.asarray(key, np.int64)
        hi, lo, vol, pk = (np.asarray(a, np.uint64) for a in (hi, lo, vol, pk))
        cells, sums, rep, cell, uvol = cpu(key, hi, lo, vol, pk)
        d_key, d_hi, d_lo, d_vol, d_pk = dev(key, hi, lo, vol, pk)
        g_cells, g_sums = (a.copy_to_host() for a in A.cell_sums_cuda(d_key, d_vol, d_pk))
        assert g_cells.dtype == np.int64 and g_sums.dtype == np.uint64, name
        assert g_sums.shape == sums.shape, (name, g_sums.shape, sums.shape)
        assert (g_cells == cells).all() and (g_sums == sums).all(), name
        out = [a.copy_to_host() for a in A.dedup_pairs_cuda(d_key, d_hi, d_lo, d_vol)]
        g_rep, g_cell, g_hi, g_lo, g_vol = out
        assert (g_rep == rep).all(), name
        assert (g_cell == cell).all() and (g_vol == uvol).all(), name
        assert (g_hi == hi[rep]).all() and (g_lo == lo[rep]).all(), name
        # the order is the rows' order, not the racing threads': a second run agrees
        again = [a.copy_to_host() for a in A.dedup_pairs_cuda(d_key, d_hi, d_lo, d_vol)]
        assert all((a == b).all() for a, b in zip(out, again)), name
        return cells.size, rep.size

    def addresses(n, v6_share=0.5):
        hi = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
        lo = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
        v4 = rng.random(n) >= v6_share
        hi[v4] = 0
        lo[v4] = V4 | (lo[v4] & np.uint64(0xFFFFFFFF))
        return hi, lo

    def volumes(n, top=2**40):
        return (rng.integers(0, top, n, dtype=np.uint64),
                rng.integers(0, 2**20, n, dtype=np.uint64))

    # random: repeated cells (negative keys too: buckets before 1970) and addresses
    hi, lo = addresses(60)
    pick = rng.integers(0, 60, N)
    key = rng.integers(-5, 40, N)
    print("random", check("random", key, hi[pick], lo[pick], *volumes(N)))

    # every row on one key and one address
    m = N // 3
    z = np.zeros(m, np.uint64)
    print("one key", check("one key", np.full(m, 7), z, V4 | z + 1, *volumes(m)))

    # every row distinct
    hi, lo = addresses(m)
    print("distinct", check("distinct", np.arange(m) * 3 - m, hi, lo, *volumes(m)))

    # IPv4-mapped and IPv6 addresses whose hashes share their low bits: every (cell,
    # address) key of the table wants the same home slot, probes run long and wrap around
    def mix(x):  # mix64 over arrays
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    cap = A.table_capacity(64)
    h, lw = addresses(200 * cap)
    c = np.arange(h.size, dtype=np.uint64) % np.uint64(2)
    assert mix(np.uint64([7]))[0] == mix64(np.uint64(7))
    slot = mix(mix(h ^ mix(lw + _GOLD)) ^ (c * _GOLD)) & np.uint64(cap - 1)
    same = np.flatnonzero(slot == slot[0])[:64]
    assert same.size == 64 and (h[same] == 0).any() and (h[same] != 0).any()
    hs, ls, key = h[same], lw[same], c[same].astype(np.int64)
    assert ip_hash(hs[1], ls[1]) == mix(hs[1:2] ^ mix(ls[1:2] + _GOLD))[0]
    pick = rng.integers(0, 64, 64)
    print("colliding", check("colliding", key[pick], hs[pick], ls[pick], *volumes(64)))
    # ... and addresses that differ only in hi, or only in lo, on one cell
    h = np.array([0, 1, 1, 0, 2**63], np.uint64)
    lw = V4 | np.array([5, 5, 6, 6, 5], np.uint64)
    print("near", check("near", np.zeros(10), np.tile(h, 2), np.tile(lw, 2), *volumes(10)))

    # sums near 2**64: exactly the largest value is fine, one more overflows on both
    top = np.uint64(2**64 - 1)
    v = np.array([top - np.uint64(10), np.uint64(6), np.uint64(4)], np.uint64)
    z3 = np.zeros(3, np.uint64)
    print("at max", check("at max", np.zeros(3), z3, V4 | z3, v, v))
    for col in ("vol", "pk", "both"):
        big = v + np.uint64(1) * np.uint64(col != "pk")
        small = v + np.uint64(1) * np.uint64(col != "vol")
        d = dev(np.zeros(3, np.int64), big, small)
        try:
            A.cell_sums_cuda(*d)
        except CounterOverflow as exc:
            assert "bytes or packets" in str(exc)
        else:
            raise AssertionError(col)
        try:
            dense_sums(np.zeros(3, np.int64), big, small, 1)
        except CounterOverflow:
            pass
        else:
            raise AssertionError(col)
    try:
        A.dedup_pairs_cuda(*dev(np.zeros(3, np.int64), z3, z3, v + np.uint64(1)))
    except CounterOverflow as exc:
        assert "bytes overflowed" in str(exc)
    else:
        raise AssertionError("pair volume")
    # the same overflowing total split over two cells is no overflow
    print("split", check("split", [0, 1, 0], z3, V4 | z3, v + np.uint64(1), v))

    # empty input
    e = np.empty(0, np.uint64)
    g = A.cell_sums_cuda(*dev(np.empty(0, np.int64), e, e))
    assert g[0].shape == (0,) and g[1].shape == (0, 3)
    assert all(a.shape[0] == 0 for a in A.dedup_pairs_cuda(*dev(np.empty(0, np.int64), e, e, e)))

    # the prefix sum, over one tile, several and tiles of tiles
    sizes = [1, A.SCAN_TILE - 1, A.SCAN_TILE, A.SCAN_TILE + 1, 5 * A.SCAN_TILE + 3]
    if {deep}:  # tiles of tiles: too many rows for the simulator
        sizes.append(3 * A.SCAN_TILE**2 // 2)
    for n in sizes:
        x = rng.integers(0, 3, n).astype(np.int64)
        d = cuda.to_device(x)
        A.inclusive_scan_cuda(d)
        assert (d.copy_to_host() == np.cumsum(x)).all(), n

    # the quarantine filter: kept rows in order, the others counted by reason
    reason = rng.choice(np.array([0, 0, 0, 1, 3], np.uint8), N)
    cols = [rng.integers(0, 2**63, N), rng.integers(0, 2**64, N, dtype=np.uint64)]
    dropped, kept = A.select_ok_cuda(*dev(reason, *cols))
    ok = reason == 0
    assert dropped == {{1: int((reason == 1).sum()), 3: int((reason == 3).sum())}}, dropped
    assert all((k.copy_to_host() == c[ok]).all() for k, c in zip(kept, cols))
    dropped, kept = A.select_ok_cuda(*dev(np.zeros(5, np.uint8), cols[0][:5]))
    assert dropped == {{}} and (kept[0].copy_to_host() == cols[0][:5]).all()
    parts = [cols[0][:3], cols[0][3:3], cols[0][3:10]]
    both = A.concat_cuda([cuda.to_device(p) for p in parts]).copy_to_host()
    assert (both == cols[0][:10]).all()
    print("OK")
    """
)

MAP_STEP = textwrap.dedent(
    """
    import pathlib, tempfile
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from flowatlas.classify import load_table
    from flowatlas.engine.backends import resolve_backend
    from flowatlas.engine.build import build_cube, build_cube_from_table, resolve_config
    from flowatlas.engine.pipeline import map_task
    from flowatlas.engine.plan import make_plan
    from flowatlas.io.archive import memory_records, open_archive, read_fragment
    from flowatlas.schema import FLOW_SCHEMA_V1
    from flowatlas.synth import synthesize

    def _summed(p):  # a piece's rows sorted by (cell, address), repeats summed
        o = np.lexsort((p.lo, p.hi, p.cell))
        cell, hi, lo, vol = p.cell[o], p.hi[o], p.lo[o], p.vol[o]
        first = np.ones(cell.size, bool)
        first[1:] = (cell[1:] != cell[:-1]) | (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
        at = np.flatnonzero(first)
        return cell[at], hi[at], lo[at], np.add.reduceat(vol, at) if at.size else vol

    assert resolve_backend("gpu") == "gpu"
    d = pathlib.Path(tempfile.mkdtemp())
    synthesize(d / "a", records={records}, days=2, start="2025-09-29", workers=1)
    archive = open_archive(d / "a")
    names = list(FLOW_SCHEMA_V1.names)
    table = pa.concat_tables([read_fragment(f, names) for f in archive.fragments()])
    n = table.num_rows
    # quarantine: volumes past 64 bits once sampled, and records with a null address
    nbytes = table.column("bytes").to_numpy().copy()
    rate = table.column("sampling_rate").to_numpy().copy()
    bad = np.arange(n) % 17 == 3
    nbytes[bad] = np.uint64(2**63)
    rate[bad] = 1000
    table = table.set_column(table.schema.get_field_index("bytes"), "bytes",
                             pa.array(nbytes, pa.uint64()))
    table = table.set_column(table.schema.get_field_index("sampling_rate"), "sampling_rate",
                             pa.array(rate, pa.uint32()))
    src = table.column("src_addr").combine_chunks()
    mask = pa.array(np.arange(n) % 29 == 5)
    table = table.set_column(table.schema.get_field_index("src_addr"), "src_addr",
                             pc.if_else(mask, pa.scalar(None, src.type), src))
    records = memory_records(table, counts="raw")

    cfg = resolve_config(d / "a", None)
    prefixes = load_table(cfg)
    for fragments in (records.fragments({slice_rows}), archive.fragments()):
        assert len(fragments) > 1  # a task of several fragments: rows concatenated on device
        plans = [make_plan(cfg, prefixes, partitions=3, backend=b) for b in ("cpu", "gpu")]
        want, got = (map_task(fragments, p) for p in plans)
        assert want.stats == got.stats, (want.stats, got.stats)
        # the CPU gives cells in key order, the device first-seen: the same cells and sums
        ow, og = np.argsort(want.cell_keys), np.argsort(got.cell_keys)
        assert (want.cell_keys[ow] == got.cell_keys[og]).all()
        assert want.cell_sums.dtype == got.cell_sums.dtype == np.uint64
        assert (want.cell_sums[ow] == got.cell_sums[og]).all()
        # per interface link and per geography: the same sorted keys and sums
        for w, g in ((want.link_sums, got.link_sums), (want.geo_sums, got.geo_sums)):
            assert w is not None and g is not None and w[0].size
            assert (w[0] == g[0]).all() and (w[1] == g[1]).all()
        # the CPU folds repeats of a (cell, IP) pair only while they are near one another,
        # the device all of them: the same rows once the CPU's repeats are summed
        for w, g in zip(want.pieces, got.pieces, strict=True):
            assert w.cell.size >= g.cell.size
            for a, b in zip(_summed(w), _summed(g), strict=True):
                assert a.dtype == b.dtype and (a == b).all()
    quarantined = map_task(records.fragments({slice_rows}), plans[1]).stats.quarantined
    assert quarantined.get("volume_overflow") and quarantined.get("null_src_addr"), quarantined

    for b in ("cpu", "gpu"):
        build_cube_from_table(table, d / ("m" + b), counts="raw", workers=0, backend=b,
                              partitions=3, partition_rows={slice_rows})
        build_cube(d / "a", d / ("a" + b), workers=0, backend=b, partitions=2)
    for name in ("cells.parquet", "rollups.parquet", "top_ips.parquet", "top_asns.parquet",
                 "sketches.parquet", "links.parquet", "geo.parquet", "cube.json"):
        for c in ("m", "a"):
            if c == "m" and name in ("links.parquet", "geo.parquet"):
                continue  # the default configuration: no interface links, no prefix table
            cpu, gpu = (d / (c + b) / name for b in ("cpu", "gpu"))
            assert cpu.read_bytes() == gpu.read_bytes(), (c, name)
    print("SAME")
    """
)


def test_cuda_accumulation_equals_cpu_under_simulator() -> None:
    """Per-cell sums, distinct (cell, IP) rows, overflow, the prefix sum and the quarantine
    filter: the device drivers give the CPU kernels' answers (simulator)."""
    out = run_script(DRIVERS.format(n=900, deep=False), cuda_simulator=True)
    assert out.strip().endswith("OK")


def test_map_step_on_gpu_equals_cpu_under_simulator() -> None:
    """map_task's per-cell sums are the CPU's array for array, its pieces the same rows, and
    the cubes (from an archive and from memory, with quarantined records) byte for byte."""
    out = run_script(MAP_STEP.format(records=600, slice_rows=150), cuda_simulator=True)
    assert out.strip().endswith("SAME")


@pytest.mark.gpu
def test_cuda_accumulation_equals_cpu_on_a_gpu() -> None:
    out = run_script(DRIVERS.format(n=200_000, deep=True), cuda_simulator=False)
    assert out.strip().endswith("OK")


@pytest.mark.gpu
def test_map_step_on_gpu_equals_cpu_on_a_gpu() -> None:
    out = run_script(MAP_STEP.format(records=300_000, slice_rows=40_000), cuda_simulator=False)
    assert out.strip().endswith("SAME")


def test_the_cube_does_not_depend_on_the_order_of_rows_in_pieces(tmp_path, monkeypatch) -> None:
    """The GPU hands each partition's distinct (cell, IP) rows on in another order than the
    CPU: the reduce and combine steps must give the same cube for any order."""
    from flowatlas.engine import pipeline
    from flowatlas.engine.build import build_cube
    from flowatlas.synth import synthesize

    synthesize(tmp_path / "a", records=6000, days=40, start="2025-08-20", seed=5, workers=1)
    build_cube(tmp_path / "a", tmp_path / "want", workers=0, partitions=2, partition_rows=1000)
    real = pipeline.map_task
    rng = np.random.default_rng(9)

    def shuffled(fragments, plan):
        result = real(fragments, plan)
        for piece in result.pieces:
            order = rng.permutation(piece.cell.size)
            for f in ("cell", "hi", "lo", "vol"):
                setattr(piece, f, getattr(piece, f)[order])
        return result

    monkeypatch.setattr(pipeline, "map_task", shuffled)
    build_cube(tmp_path / "a", tmp_path / "got", workers=0, partitions=2, partition_rows=1000)
    names = sorted(p.name for p in (tmp_path / "want").iterdir() if p.is_file())
    assert "cells.parquet" in names and "top_ips.parquet" in names and "cube.json" in names
    for name in names:
        assert (tmp_path / "want" / name).read_bytes() == (tmp_path / "got" / name).read_bytes(), (
            name
        )
