"""Races in the device hash tables: heavy duplicate keys and forced collisions at scale.

The simulator runs CUDA blocks one after another and serialises atomics, so a race in the
device hash aggregation (kernels/cuda_accumulate.py) cannot show there. This stress form
runs on a real GPU (``--gpu``): millions of rows on a handful of keys (every thread of the
grid fights for the same slots and the same uint64 sums), and hundreds of distinct (cell,
address) keys chosen so that their home slots fall inside one narrow window of the table
(long linear-probing chains claimed concurrently). Each case is compared with the CPU
kernels exactly, and run twice (the output order must not depend on the race). A small
size of the same script runs under the simulator in CI, so the script itself is tested.
"""

from __future__ import annotations

import textwrap

import pytest

from flowatlas.testing import run_script

STRESS = textwrap.dedent(
    """
    import numpy as np
    np.seterr(over="ignore")  # uint64 wrap-around is the hash, not an accident
    from numba import cuda
    from flowatlas.kernels import cuda_accumulate as A
    from flowatlas.kernels.accumulate import _GOLD
    from flowatlas.kernels.distinct import dedup_per_ip, dense_sums, key_ids

    N, KEYS, WINDOW = {n}, {keys}, {window}
    rng = np.random.default_rng(11)
    V4 = np.uint64(0xFFFF) << np.uint64(32)

    def mix(x):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    def check(name, key, hi, lo, vol, pk):
        cid, cells = key_ids(key)
        sums = dense_sums(cid, vol, pk, cells.size)
        rep, ucid, uvol = dedup_per_ip(hi, lo, cid, vol, cells.size)
        o = np.argsort(rep, kind="stable")
        d = [cuda.to_device(np.ascontiguousarray(a)) for a in (key, hi, lo, vol, pk)]
        for attempt in range(2):
            g_cells, g_sums = (a.copy_to_host() for a in A.cell_sums_cuda(d[0], d[3], d[4]))
            assert (g_cells == cells).all() and (g_sums == sums).all(), (name, attempt)
            g_rep, g_cell, g_hi, g_lo, g_vol = (
                a.copy_to_host() for a in A.dedup_pairs_cuda(d[0], d[1], d[2], d[3])
            )
            assert (g_rep == rep[o]).all(), (name, attempt)
            assert (g_cell == cells[ucid[o]]).all() and (g_vol == uvol[o]).all(), (name, attempt)
            assert (g_hi == hi[rep[o]]).all() and (g_lo == lo[rep[o]]).all(), (name, attempt)
        print(name, cells.size, rep.size)

    def volumes(n):
        return (rng.integers(0, 2**36, n, dtype=np.uint64),
                rng.integers(0, 2**16, n, dtype=np.uint64))

    # 1. every row on one of a few cells and a few addresses: maximal atomic contention
    key = rng.integers(0, 4, N).astype(np.int64)
    addr = rng.integers(0, 8, N).astype(np.uint64)
    check("duplicates", key, np.zeros(N, np.uint64), V4 | addr, *volumes(N))

    # 2. KEYS distinct (cell, address) keys whose home slots all fall in WINDOW consecutive
    # slots of the table N rows get; repeated to N rows in random order, so threads race to
    # claim slots along chains about KEYS long
    cap = A.table_capacity(N)
    found_hi, found_lo, found_c = [], [], []
    start = 0
    while sum(a.size for a in found_lo) < KEYS:
        idx = np.arange(start, start + (1 << 22), dtype=np.uint64)
        start += 1 << 22
        hi = np.where(idx % np.uint64(3) == 0, np.uint64(0x2001_0DB8) << np.uint64(32) | idx,
                      np.uint64(0))
        lo = np.where(hi == 0, V4 | (idx & np.uint64(0xFFFFFFFF)), mix(idx))
        c = idx % np.uint64(2)
        slot = mix(mix(hi ^ mix(lo + _GOLD)) ^ (c * _GOLD)) & np.uint64(cap - 1)
        hit = slot < np.uint64(WINDOW)
        found_hi.append(hi[hit]); found_lo.append(lo[hit]); found_c.append(c[hit])
    hs, ls = np.concatenate(found_hi)[:KEYS], np.concatenate(found_lo)[:KEYS]
    cs = np.concatenate(found_c)[:KEYS].astype(np.int64)
    assert (hs == 0).any() and (hs != 0).any()
    pick = rng.integers(0, KEYS, N)
    check("collisions", cs[pick], hs[pick], ls[pick], *volumes(N))
    print("OK")
    """
)


def test_stress_script_under_the_simulator() -> None:
    """The stress script at a size the simulator runs in seconds (it tests the script)."""
    out = run_script(STRESS.format(n=1500, keys=24, window=8), cuda_simulator=True)
    assert out.strip().endswith("OK"), out


@pytest.mark.gpu
def test_device_hash_tables_under_contention_and_collisions_on_a_gpu() -> None:
    out = run_script(STRESS.format(n=8_000_000, keys=512, window=64), cuda_simulator=False)
    assert out.strip().endswith("OK"), out
