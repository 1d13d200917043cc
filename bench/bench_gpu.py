"""GPU benchmark: the build's map step, device-resident, stage by stage (issues 3 and 4).

Flow records are synthesized on the host (columns shaped as ``engine/gpu.py``'s
``orient_cells_gpu`` takes them: 16-byte addresses as uint64 hi/lo pairs, exporter region and
id per record, interfaces, start time, bytes, packets, sampling rate), copied to the device
once, untimed, and then the map step's kernels run on them, stage by stage, timed with CUDA
events (``numba.cuda.event``):

1. local LPM: both ends against the region table, gathered to region numbers;
2. orientation (direction, region, remote end, private-link type);
3. the remote end picked, and whether it is IPv6;
4. remote LPM: the remote end against a real prefix table, IPFire's libloc table (1.29 M
   prefixes, from ``flowatlas.testing.shared_data_dir()``, compiled as bench_lpm.py does;
   without it the synthetic world's table, and a printed note);
5. network type; 6. cells (packed key, sampling-corrected volume and packets, quarantine
   reason); 7. the quarantine filter; 8. per-cell sums; 9. distinct (cell, remote IP) rows.

The stages are the calls ``orient_cells_gpu``, ``accept_on_device`` and ``accumulate_gpu``
make, without their host-to-device copies (a check below runs those functions themselves on a
sample and compares). Each stage's time includes what it allocates (numba's ``cudaMalloc``)
and the small host reads the drivers make (counts of dropped rows, of distinct keys).

For each stage it reports records/s, the fewest bytes the stage must move through device
memory (each input column read once, each output column written once; lookup tables and
hash-table traffic are not counted: they are the gap above that floor) and the achieved
GB/s against a measured device-to-device copy (bytes read + bytes written), i.e. the
fraction of HBM bandwidth. End to end it reports records/s, and the floor of a fully fused
map step (the record columns read once, the per-cell sums and distinct rows written once).

Warm-up first, then the median of ``--repeat`` runs; when one input set would fit in L2
several sets are made and the runs rotate among them. Correctness: on a sample (the first
2^20 records) the per-cell keys and sums must equal the CPU path's (``orient_and_cell`` +
``key_ids`` + ``dense_sums``) array for array, and the distinct rows equal ``dedup_per_ip``'s
as sets; the sample also goes through the engine's own GPU functions, which must agree too.

    python bench/bench_gpu.py                       # default size (2^27 records), H100-sized
    python bench/bench_gpu.py --records 50000000 --repeat 7
    python bench/bench_gpu.py --results gpu-out/RESULTS-gpu.md
    NUMBA_ENABLE_CUDASIM=1 python bench/bench_gpu.py --smoke   # CI: tiny, simulator

The default of 2^27 (1.34x10^8) records rather than 2x10^8: the device hash tables have a
power-of-two capacity of at least twice the rows, so just past 2^27 rows they double (2x10^8
records would peak near 65 GB of the H100's 80); 2^27 peaks near 40 GB (printed). Sizes
that would not fit in 80 % of the free device memory are halved until they do.

On a lent GPU (the device tool, one call, under 10 minutes): ``bash bench/gpu_session.sh``
runs the GPU tests, this benchmark, bench_lpm.py --gpu and bench_hll.py --gpu, writing
logs, a summary and ``RESULTS-gpu.md`` under ``$OUT``; then copy ``$OUT/RESULTS-gpu.md``'s
sections into bench/RESULTS.md. ``../shared`` does not travel to the device machine: copy
the libloc folder into an ignored ``.gpu-data/prefix2asn/`` and carry it (the script points
``FLOWATLAS_DATA`` there), or this benchmark falls back to the world's table and
bench_lpm.py stops; the script's header lists the steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numba import config as numba_config
from numba import cuda

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, markdown_table, provenance, write_section

from flowatlas.addresses import hilo_to_bytes16
from flowatlas.classify.table import PrefixTable
from flowatlas.engine.plan import BuildPlan, make_plan
from flowatlas.schema import COUNTS_RAW, TIMESTAMP
from flowatlas.testing import shared_data_dir

HEADING = "GPU map step, device-resident"
LIBLOC = "prefix2asn/libloc_ipfire"
SIMULATED = bool(numba_config.ENABLE_CUDASIM)
DEFAULT_RECORDS = 1 << 27
CHUNK = 1 << 22  # records generated (and copied) at a time
SAMPLE = 1 << 20  # records checked against the CPU path
L2_FALLBACK = 50 << 20  # H100's L2, where the driver does not say
START_US = 1_751_328_000_000_000  # 2025-07-01 00:00 UTC
DAY_US = 86_400_000_000
V4 = np.uint64(0xFFFF_0000_0000)

#: (name, dtype) of the record columns the chain reads; 74 bytes per record
INPUTS = (
    ("src_hi", np.uint64), ("src_lo", np.uint64), ("dst_hi", np.uint64), ("dst_lo", np.uint64),
    ("exp_reg", np.int16), ("exp_id", np.int32), ("in_if", np.uint32), ("out_if", np.uint32),
    ("t_us", np.int64), ("bytes", np.uint64), ("packets", np.uint64), ("rate", np.uint32),
)  # fmt: skip
INPUT_BYTES = sum(np.dtype(t).itemsize for _, t in INPUTS)
STAGES = (
    "local LPM (both ends)",
    "orientation",
    "remote end",
    "remote LPM (prefix table)",
    "network type",
    "cells",
    "quarantine filter",
    "per-cell sums",
    "distinct (cell, IP) rows",
)


# --------------------------------------------------------------------------- the device


def device_name() -> str:
    """The current CUDA device's name ("numba CUDA simulator" under the simulator)."""
    if SIMULATED:
        return "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    name = cuda.current_context().device.name
    return name.decode() if isinstance(name, bytes) else str(name)


def memory_info() -> tuple[float, float]:
    """(free, total) device memory in bytes (infinite under the simulator)."""
    free, total = cuda.current_context().get_memory_info()
    return float(free), float(total)


def l2_bytes() -> int:
    """The device's L2 cache size (50 MiB, an H100's, where it cannot be read)."""
    if SIMULATED:
        return L2_FALLBACK
    try:
        return int(cuda.current_context().device.L2_CACHE_SIZE)
    except Exception:  # an attribute the driver may not expose
        return L2_FALLBACK


class Marks:
    """Points on the device's timeline: CUDA events, or host clocks under the simulator
    (whose events record no time)."""

    def __init__(self) -> None:
        self.points: list[Any] = []

    def mark(self) -> None:
        if SIMULATED:
            self.points.append(time.perf_counter())
        else:
            ev = cuda.event(timing=True)
            ev.record()
            self.points.append(ev)

    def seconds(self) -> list[float]:
        """Seconds between consecutive marks (waits for the last one)."""
        if SIMULATED:
            return [b - a for a, b in zip(self.points, self.points[1:], strict=False)]
        self.points[-1].synchronize()
        return [
            cuda.event_elapsed_time(a, b) / 1e3
            for a, b in zip(self.points, self.points[1:], strict=False)
        ]


def copy_bandwidth(nbytes: int, repeat: int) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written.

    A ``nbytes`` numba device array copied into another (``cudaMemcpyDtoD``); median of
    ``repeat`` timed copies after one warm-up. CuPy's ``copyto`` too when CuPy imports,
    and the larger of the two is returned (both are printed).
    """
    n = max(1, nbytes // 8)
    src = cuda.to_device(np.arange(n, dtype=np.uint64))
    dst = cuda.device_array(n, np.uint64)
    rates = {}
    times = []
    for i in range(repeat + 1):
        m = Marks()
        m.mark()
        dst.copy_to_device(src)
        m.mark()
        if i:
            times.append(m.seconds()[0])
    rates["numba copy_to_device"] = 2 * 8 * n / max(float(np.median(times)), 1e-12)
    if not SIMULATED:
        try:
            import cupy as cp

            a, b = cp.asarray(src), cp.asarray(dst)
            times = []
            for i in range(repeat + 1):
                m = Marks()
                m.mark()
                cp.copyto(b, a)
                m.mark()
                if i:
                    times.append(m.seconds()[0])
            rates["cupy copyto"] = 2 * 8 * n / float(np.median(times))
            del a, b
        except ImportError:
            pass
    for k, v in rates.items():
        print(f"d2d copy ({k}, {nbytes / 2**30:.1f} GiB): {v / 1e9:,.0f} GB/s (read + write)")
    del src, dst
    return max(rates.values())


# --------------------------------------------------------------------------- the plan, records


def world_table(cfg: Any, world: Any) -> PrefixTable:
    """The synthetic world's prefix table (what ``flowatlas synth`` writes as prefixes.csv)."""
    from flowatlas.classify import build_table
    from flowatlas.config import SourceSpec

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prefixes.csv"
        with open(path, "w") as fh:
            fh.write("prefix,network_type,asn,org,country\n")
            for p, t, asn, org, cc in world.prefix_rows():
                fh.write(f"{p},{t},{asn},{org},{cc}\n")
        return build_table(
            [SourceSpec(str(path), "prefix-csv", "synthetic world")],
            network_types=cfg.network_types,
        )


def libloc_table() -> PrefixTable | None:
    """IPFire's libloc table, compiled as bench_lpm.py does (None where the data is absent)."""
    from flowatlas.classify.compiler import compile_layers
    from flowatlas.classify.sources import read_source
    from flowatlas.classify.table import default_bits6

    files = [shared_data_dir() / LIBLOC / f"libloc-prefix2as-v{v}.tsv.gz" for v in (4, 6)]
    if not all(f.exists() for f in files):
        return None
    c = compile_layers([read_source(f, "libloc")[0] for f in files])
    bits6 = default_bits6(c.starts_hi, c.starts_lo)
    return PrefixTable(c.starts_hi, c.starts_lo, c.values, c.networks, {"bits6": bits6})


@dataclasses.dataclass
class Recipe:
    """What records are drawn from: exporters, local prefixes, the remote address pool."""

    exp_key: list[bytes]  # 16-byte exporter addresses (the archive's exporter column)
    exp_reg: np.ndarray  # int16, per exporter
    exp_id: np.ndarray  # int32, per exporter
    exp_rate: np.ndarray  # uint32 sampling rate, per exporter
    local4: list[list[tuple[int, int]]]  # per region index: IPv4 (start, size) blocks
    local6: list[list[int]]  # per region index: IPv6 /44 starts (hi word)
    pool_hi: np.ndarray
    pool_lo: np.ndarray


def make_recipe(plan: BuildPlan, cfg: Any, table: PrefixTable, pool: int, seed: int) -> Recipe:
    """Exporters and local prefixes from the synthetic world's configuration; a pool of
    ``pool`` remote addresses: 80 % uniform IPv4, 20 % IPv6 inside the table's intervals."""
    import ipaddress

    from flowatlas.synth import EXPORTERS

    rate_of = {e.address: e.sampling for e in EXPORTERS}
    keys, regs, ids, rates = [], [], [], []
    for region in cfg.regions:
        for addr in region.exporters:
            key = (0xFFFF_0000_0000 | int(ipaddress.IPv4Address(addr))).to_bytes(16, "big")
            ex_id, reg = plan.exporters[key]
            keys.append(key)
            ids.append(ex_id)
            regs.append(reg)
            rates.append(rate_of.get(addr, 1))
    local4: list[list[tuple[int, int]]] = [[] for _ in plan.regions]
    local6: list[list[int]] = [[] for _ in plan.regions]
    for ri, region in enumerate(cfg.regions, start=1):
        for p in region.prefixes:
            net = ipaddress.ip_network(p)
            if net.version == 4:
                local4[ri].append((0xFFFF_0000_0000 | int(net.network_address), net.num_addresses))
            else:
                local6[ri].append(int(net.network_address) >> 64)
    rng = np.random.default_rng([seed, 0x9001])
    n6 = pool // 5
    hi = np.zeros(pool, np.uint64)
    lo = V4 | rng.integers(0, 2**32, pool, dtype=np.uint64)
    v6 = np.flatnonzero(table.starts_hi != 0)
    if n6 and v6.size:
        pick = v6[rng.integers(0, v6.size, n6)]
        hi[:n6] = table.starts_hi[pick]
        lo[:n6] = table.starts_lo[pick] | rng.integers(0, 1 << 24, n6, dtype=np.uint64)
    order = rng.permutation(pool)
    return Recipe(keys, np.array(regs, np.int16), np.array(ids, np.int32),
                  np.array(rates, np.uint32), local4, local6, hi[order], lo[order])  # fmt: skip


def make_records(recipe: Recipe, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` records: the INPUTS columns, plus ``exporter`` (index into ``recipe.exp_key``).

    47 % ingress and 47 % egress (the remote end from the pool, the local end in the
    exporter's region, same family), 4 % internal (both ends local), 2 % with neither end
    local; interfaces from the world's border, internal and private-link (Migration) sets;
    start times uniform over 184 days; 0.1 % of records with a volume past 64 bits once
    sampled (quarantined as volume_overflow; every 997th, from the 14th).
    """
    e = rng.integers(0, len(recipe.exp_key), n)
    reg = recipe.exp_reg[e]
    j = rng.integers(0, recipe.pool_hi.size, n)
    r_hi, r_lo = recipe.pool_hi[j], recipe.pool_lo[j]
    is6 = r_hi != 0
    # a local address in the exporter's region, of the remote end's family
    l_hi = np.zeros(n, np.uint64)
    l_lo = np.zeros(n, np.uint64)
    for ri in range(len(recipe.local4)):
        blocks4, blocks6 = recipe.local4[ri], recipe.local6[ri]
        for fam, blocks in ((False, blocks4), (True, blocks6)):
            sel = np.flatnonzero((reg == ri) & (is6 == fam))
            if not sel.size or not blocks:
                continue
            b = rng.integers(0, len(blocks), sel.size)
            if fam:
                l_hi[sel] = np.array(blocks, np.uint64)[b] | rng.integers(
                    0, 1 << 20, sel.size, dtype=np.uint64
                )
                l_lo[sel] = rng.integers(1, 2**63, sel.size, dtype=np.uint64)
            else:
                start = np.array([s for s, _ in blocks], np.uint64)[b]
                size = np.array([z for _, z in blocks], np.uint64)[b]
                l_lo[sel] = start + rng.integers(1, 2**31, sel.size, dtype=np.uint64) % (
                    size - np.uint64(1)
                )
    u = rng.random(n)
    internal = u < 0.04
    if internal.any():  # the remote end is local too (another region's block, same family)
        sel = np.flatnonzero(internal)
        donor = rng.permutation(sel)
        r_hi[sel], r_lo[sel] = l_hi[donor], l_lo[donor]
    transit = (u >= 0.04) & (u < 0.06)
    if transit.any():  # neither end local: a second pool address
        sel = np.flatnonzero(transit)
        k = rng.integers(0, recipe.pool_hi.size, sel.size)
        l_hi[sel], l_lo[sel] = recipe.pool_hi[k], recipe.pool_lo[k]
    egress = rng.random(n) < 0.5
    ifs = np.array([1, 2, 3, 4, 5, 6, 7, 8, 101, 102, 103, 104, 501, 502], np.uint32)
    rate = recipe.exp_rate[e]
    nbytes = rng.integers(40, 1_500_000, n, dtype=np.uint64)
    bad = np.arange(n) % 997 == 13  # deterministic, so even a tiny run has one
    nbytes[bad] = np.uint64(2**63)
    rate = np.where(bad, np.uint32(1000), rate).astype(np.uint32)
    return {
        "src_hi": np.where(egress, l_hi, r_hi),
        "src_lo": np.where(egress, l_lo, r_lo),
        "dst_hi": np.where(egress, r_hi, l_hi),
        "dst_lo": np.where(egress, r_lo, l_lo),
        "exp_reg": reg,
        "exp_id": recipe.exp_id[e],
        "in_if": ifs[rng.integers(0, ifs.size, n)],
        "out_if": ifs[rng.integers(0, ifs.size, n)],
        "t_us": START_US + rng.integers(0, 184 * DAY_US, n, dtype=np.int64),
        "bytes": nbytes,
        "packets": np.maximum(nbytes // np.uint64(700), np.uint64(1)),
        "rate": rate,
        "exporter": e,
    }


def as_table(recipe: Recipe, rec: dict[str, np.ndarray]) -> pa.Table:
    """The records as the archive's columns (what ``orient_and_cell`` reads)."""
    keys = np.frombuffer(b"".join(recipe.exp_key), np.uint8).reshape(-1, 16)[rec["exporter"]]
    return pa.table(
        {
            "time_start": pa.array(rec["t_us"], pa.int64()).cast(TIMESTAMP),
            "exporter": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(16), len(keys), [None, pa.py_buffer(keys.tobytes())]
            ),
            "in_if": pa.array(rec["in_if"], pa.uint32()),
            "out_if": pa.array(rec["out_if"], pa.uint32()),
            "src_addr": hilo_to_bytes16(rec["src_hi"], rec["src_lo"]),
            "dst_addr": hilo_to_bytes16(rec["dst_hi"], rec["dst_lo"]),
            "bytes": pa.array(rec["bytes"], pa.uint64()),
            "packets": pa.array(rec["packets"], pa.uint64()),
            "sampling_rate": pa.array(rec["rate"], pa.uint32()),
        }
    )


def to_device_set(recipe: Recipe, n: int, seed: int, s: int) -> tuple[dict[str, Any], dict]:
    """One input set of ``n`` records on the device, generated and copied CHUNK at a time;
    returns it and the host records of its first chunk (the sample)."""
    d = {name: cuda.device_array(n, dt) for name, dt in INPUTS}
    first: dict[str, np.ndarray] = {}
    for c, at in enumerate(range(0, n, CHUNK)):
        m = min(CHUNK, n - at)
        rec = make_records(recipe, m, np.random.default_rng([seed, s, c]))
        for name, dt in INPUTS:
            d[name][at : at + m].copy_to_device(np.ascontiguousarray(rec[name], dt))
        if c == 0:
            first = rec
    return d, first


# --------------------------------------------------------------------------- the chain


def chain(plan: BuildPlan, d: dict[str, Any], mark: Callable[[], None]) -> dict[str, Any]:
    """The map step on device-resident columns ``d``, ``mark()`` after each of STAGES.

    The calls of ``engine.gpu.orient_cells_gpu``, ``accept_on_device`` and
    ``accumulate_gpu``, in their order, without copying the records to the device.
    """
    from flowatlas.engine.gpu import _on_device
    from flowatlas.kernels import cuda as K
    from flowatlas.kernels.cuda_accumulate import cell_sums_cuda, dedup_pairs_cuda, select_ok_cuda
    from flowatlas.kernels.lpm import lookup_cuda

    dev = _on_device(plan)
    n = d["src_hi"].shape[0]
    blocks, threads = K._grid(n)
    mark()
    src_reg = cuda.device_array(n, np.int32)
    dst_reg = cuda.device_array(n, np.int32)
    for end, reg in (("src", src_reg), ("dst", dst_reg)):
        net = lookup_cuda(dev["local"], d[end + "_hi"], d[end + "_lo"])
        K.gather_kernel[blocks, threads](dev["local_region"], net, reg)
    del net
    mark()
    direction, region, remote_is_dst, link_type, _link = K.orient_cuda(
        src_reg, dst_reg, d["exp_reg"], d["exp_id"], d["in_if"], d["out_if"],
        dev["rule_keys"], dev["rule_types"], dev["rule_links"],
    )  # fmt: skip
    del src_reg, dst_reg, _link
    mark()
    r_hi = cuda.device_array(n, np.uint64)
    r_lo = cuda.device_array(n, np.uint64)
    is_v6 = cuda.device_array(n, np.uint8)
    K.remote_kernel[blocks, threads](
        remote_is_dst, d["src_hi"], d["src_lo"], d["dst_hi"], d["dst_lo"], r_hi, r_lo, is_v6
    )
    del remote_is_dst
    mark()
    net = lookup_cuda(dev["class"], r_hi, r_lo)
    mark()
    ntype = cuda.device_array(n, np.int16)
    K.type_kernel[blocks, threads](
        net, dev["type_codes"], dev["user_override"], link_type, direction,
        np.int16(plan.internal_type), ntype,
    )  # fmt: skip
    del net, link_type
    mark()
    cell, vol, pk, reason = K.cells_cuda(
        d["t_us"], plan.bucket_us, region, ntype, direction, is_v6, d["bytes"], d["packets"],
        d["rate"], False,
    )  # fmt: skip
    del region, ntype, direction, is_v6
    mark()
    dropped, (key, hi, lo, v, p) = select_ok_cuda(reason, cell, r_hi, r_lo, vol, pk)
    del cell, r_hi, r_lo, vol, pk, reason
    mark()
    cells, sums = cell_sums_cuda(key, v, p)
    mark()
    _rep, u_cell, u_hi, u_lo, u_vol = dedup_pairs_cuda(key, hi, lo, v)
    mark()
    return {"dropped": dropped, "kept": int(key.shape[0]), "cells": cells, "sums": sums,
            "u_cell": u_cell, "u_hi": u_hi, "u_lo": u_lo, "u_vol": u_vol}  # fmt: skip


def stage_bytes(n: int, kept: int, cells: int, rows: int, dropped_any: bool) -> list[int]:
    """The fewest bytes each of STAGES moves: each input column read once, each output
    column written once (lookup tables and hash tables not counted).

    The remote-end stage counts both ends read: a warp's rows pick ends at random, so both
    columns' 32-byte sectors are fetched. The filter reads only ``reason`` when nothing is
    dropped (the columns are handed on as they are), else it also reads 40 bytes and writes
    40 per kept row.
    """
    filt = n + (40 * n + 40 * kept if dropped_any else 0)
    return [
        n * (32 + 8),  # hi/lo of both ends -> two int32 regions
        n * (4 + 4 + 2 + 4 + 4 + 4 + 1 + 2 + 1 + 2),  # regions, exporter, ifs -> 4 columns
        n * (1 + 32 + 16 + 1),  # which end, both ends -> remote hi/lo, is_v6
        n * (16 + 4),  # remote hi/lo -> network id
        n * (4 + 2 + 1 + 2),  # network id, link type, direction -> type
        n * (8 + 2 + 2 + 1 + 1 + 8 + 8 + 4 + 8 + 8 + 8 + 1),  # -> cell, vol, pk, reason
        filt,
        kept * 24 + cells * 32,  # key, vol, pk -> key + 3 sums per cell
        kept * 32 + rows * 32,  # cell, hi, lo, vol -> one row per distinct (cell, IP)
    ]


# --------------------------------------------------------------------------- checking


def check_sample(
    plan: BuildPlan, recipe: Recipe, host: dict[str, np.ndarray], d: dict[str, Any], s: int
) -> dict[str, bool]:
    """The chain on the first ``s`` device records against the CPU path and against the
    engine's own GPU functions on the same records."""
    from flowatlas.engine.gpu import accumulate_gpu
    from flowatlas.engine.pipeline import orient_and_cell
    from flowatlas.kernels.distinct import dedup_per_ip, dense_sums, key_ids

    got = chain(plan, {k: v[:s] for k, v in d.items()}, lambda: None)
    g = {k: (v.copy_to_host() if hasattr(v, "copy_to_host") else v) for k, v in got.items()}
    table = as_table(recipe, {k: v[:s] for k, v in host.items()})
    cpu_plan = dataclasses.replace(plan, backend="cpu")
    rows, stats = orient_and_cell(table, cpu_plan, COUNTS_RAW)
    cid, cells = key_ids(rows.key)
    sums = dense_sums(cid, rows.vol, rows.pk, cells.size)
    rep, ucid, uvol = dedup_per_ip(rows.hi, rows.lo, cid, rows.vol, cells.size)
    want_rows = (cells[ucid], rows.hi[rep], rows.lo[rep], uvol)

    def rows_equal(a: tuple, b: tuple) -> bool:
        oa, ob = np.lexsort(a[2::-1]), np.lexsort(b[2::-1])
        return all(x.size == y.size and (x[oa] == y[ob]).all() for x, y in zip(a, b, strict=True))

    from flowatlas.kernels.orient import REASONS

    got_rows = (g["u_cell"], g["u_hi"], g["u_lo"], g["u_vol"])
    dropped = {REASONS[c]: k for c, k in g["dropped"].items()}
    out = {
        "cells and sums equal the CPU's, array for array": bool(
            np.array_equal(g["cells"], cells) and np.array_equal(g["sums"], sums)
        ),
        "distinct rows equal the CPU's, as sets": rows_equal(got_rows, want_rows),
        "quarantine counts equal the CPU's": dropped == stats.quarantined,
    }
    gpu_plan = dataclasses.replace(plan, backend="gpu")
    rows_g, _st = orient_and_cell(table, gpu_plan, COUNTS_RAW, on_device=True)
    e_cells, e_sums, e_hi, e_lo, e_cell, e_vol, *_ = accumulate_gpu([rows_g], gpu_plan)
    out["the engine's GPU functions agree"] = bool(
        np.array_equal(e_cells, g["cells"])
        and np.array_equal(e_sums, g["sums"])
        and rows_equal((e_cell, e_hi, e_lo, e_vol), got_rows)
    )
    return out


# --------------------------------------------------------------------------- main


def peak_estimate(n: int, sets: int) -> int:
    """Device bytes the run needs at its peak, roughly: the input sets, the per-record
    intermediates still alive at the filter, and the larger hash table with its columns."""
    from flowatlas.kernels.cuda_accumulate import table_capacity

    return sets * INPUT_BYTES * n + 130 * n + 40 * table_capacity(n) + 16 * n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=None, help=f"records [{DEFAULT_RECORDS:,}]")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs (median) [5]")
    ap.add_argument("--pool", type=float, default=0.125, help="distinct remote IPs per record")
    ap.add_argument("--copy-gib", type=float, default=4.0, help="size of the d2d copy [4 GiB]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--world-table", action="store_true", help="skip libloc; world's table")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CI, the simulator)")
    ap.add_argument("--results", default=None, help="write a section into this results file")
    args = ap.parse_args(argv)
    if args.smoke:
        args.records = args.records or 256
        args.repeat, args.copy_gib, args.world_table = 1, 1 / 2**20, True
    n = args.records or DEFAULT_RECORDS
    load_before = load_average()
    report: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        report.append(line)

    free0, total = memory_info()
    say(f"device: {device_name()}; memory {total / 2**30:,.1f} GiB, free {free0 / 2**30:,.1f}")
    if SIMULATED:
        say("simulator: timings and rates below are meaningless; only the checks count")

    from flowatlas.synth import build_world

    t0 = time.perf_counter()
    world = build_world(args.seed)
    cfg = world.config()
    table = None if args.world_table else libloc_table()
    if table is None:
        say(
            "note: the remote LPM uses the synthetic world's prefix table (libloc "
            f"{'skipped' if args.world_table else 'not found under ' + str(shared_data_dir())})"
        )
        table = world_table(cfg, world)
        table_name = "synthetic world's table"
    else:
        table_name = "IPFire libloc (IPv4 + IPv6)"
    plan = make_plan(cfg, table, backend="gpu")
    index = table.index
    say(
        f"prefix table: {table_name}, {table.starts_hi.size:,} intervals, "
        f"{table.networks.num_rows:,} networks, index {index.nbytes / 2**20:,.0f} MiB "
        f"(plan {time.perf_counter() - t0:.1f} s)"
    )

    bw = copy_bandwidth(int(args.copy_gib * 2**30), 5 if not SIMULATED else 1)
    l2 = l2_bytes()
    sets = 1
    if n * INPUT_BYTES < 4 * l2:  # inputs would sit in L2: rotate among enough sets
        sets = min(8, max(2, math.ceil(4 * l2 / (n * INPUT_BYTES))))
    while not SIMULATED and peak_estimate(n, sets) > 0.8 * free0 and n > CHUNK:
        n //= 2
        say(f"note: halved the records to {n:,} to fit in the device's free memory")
    recipe = make_recipe(plan, cfg, table, max(1000, int(n * args.pool)), args.seed)

    t0 = time.perf_counter()
    inputs = []
    sample_host: dict[str, np.ndarray] = {}
    for s in range(sets):
        d, first = to_device_set(recipe, n, args.seed, s)
        inputs.append(d)
        if s == 0:
            sample_host = first
    cuda.synchronize()
    say(
        f"records: {n:,} x {sets} input set(s) ({INPUT_BYTES} bytes a record, "
        f"{sets * n * INPUT_BYTES / 2**30:,.2f} GiB on the device; L2 {l2 / 2**20:.0f} MiB), "
        f"generated and copied in {time.perf_counter() - t0:.1f} s; "
        f"remote pool {recipe.pool_hi.size:,} addresses"
    )

    # warm-up (compiles every kernel), with the device memory watched after each stage
    low = [memory_info()[0]]
    res = chain(plan, inputs[0], lambda: low.append(memory_info()[0]))
    cuda.synchronize()
    peak_used = total - min(low)
    kept, m_cells, m_rows = res["kept"], int(res["cells"].shape[0]), int(res["u_cell"].shape[0])
    dropped_n = sum(res["dropped"].values())
    del res
    if not SIMULATED:
        cuda.current_context().deallocations.clear()
    say(
        f"warm-up: {kept:,} records kept ({dropped_n:,} quarantined), {m_cells:,} cells, "
        f"{m_rows:,} distinct (cell, IP) rows; device memory in use at the peak "
        + (
            "n/a (simulator)"
            if SIMULATED
            else f"{peak_used / 2**30:,.1f} GiB of {total / 2**30:,.1f}"
        )
    )

    per_stage: list[list[float]] = [[] for _ in STAGES]
    totals: list[float] = []
    for r in range(args.repeat):
        marks = Marks()
        res = chain(plan, inputs[r % sets], marks.mark)
        secs = marks.seconds()
        del res
        if not SIMULATED:
            cuda.current_context().deallocations.clear()
        for i, t in enumerate(secs):
            per_stage[i].append(t)
        totals.append(sum(secs))
    med = [float(np.median(x)) for x in per_stage]
    total_s = float(np.median(totals))
    spread = (max(totals) - min(totals)) / total_s if total_s > 0 else 0.0

    s = min(n, SAMPLE)
    checks = check_sample(plan, recipe, sample_host, inputs[0], s)
    ok = all(checks.values())

    need = stage_bytes(n, kept, m_cells, m_rows, dropped_n > 0)
    fused = n * INPUT_BYTES + m_cells * 32 + m_rows * 32
    rows_out = []
    for name, t, b in zip(STAGES, med, need, strict=True):
        gbs = b / t / 1e9 if t > 0 else float("nan")
        rows_out.append([
            name, f"{t * 1e3:.3f}", f"{n / t:.3g}" if t > 0 else "-", f"{b / n:.1f}",
            f"{gbs:,.0f}", f"{100 * b / t / bw:.0f} %" if t > 0 else "-",
        ])  # fmt: skip
    chain_b = sum(need)
    rows_out.append([
        "**end to end**", f"{total_s * 1e3:.3f}", f"{n / total_s:.3g}" if total_s > 0 else "-",
        f"{chain_b / n:.1f}", f"{chain_b / total_s / 1e9:,.0f}" if total_s > 0 else "-",
        f"{100 * chain_b / total_s / bw:.0f} %" if total_s > 0 else "-",
    ])  # fmt: skip

    say()
    say(f"d2d copy bandwidth (read + write): {bw / 1e9:,.0f} GB/s")
    say(
        f"end to end: {n / total_s:.3g} records/s (issue 4 asks >= 2e9); median of "
        f"{args.repeat} runs after a warm-up, spread {100 * spread:.0f} % (max - min over median)"
        if total_s > 0
        else "end to end: -"
    )
    if med[3] > 0:
        say(
            f"remote LPM: {n / med[3]:.3g} lookups/s against the {table_name} (issue 3 asks "
            f">= 2e10 for IPv4); local LPM {2 * n / med[0]:.3g} lookups/s (with the gather)"
        )
    say(
        f"fused floor: {fused / n:.1f} bytes a record (columns read once, sums and distinct "
        f"rows written once) -> {fused / bw * 1e3:.3f} ms, {n * bw / fused:.3g} records/s; "
        f"the chain moves at least {chain_b / n:.1f} bytes a record"
    )
    say(f"checks on {s:,} records: " + "; ".join(f"{k}: {v}" for k, v in checks.items()))
    say(f"equal to the CPU path: {ok}")
    say()
    say(
        markdown_table(
            ["stage", "ms", "records/s", "min bytes/record", "GB/s", "of d2d copy"], rows_out
        )
    )

    if args.results:
        lines = provenance(
            ("numba", "numba-cuda", "numpy", "pyarrow", "cupy"),
            load_before,
            f"python bench/bench_gpu.py --records {n} --repeat {args.repeat}",
        )
        lines[0] = lines[0].replace("- machine: ", f"- machine: GPU {device_name()}; host ", 1)
        body = "\n".join(
            [
                "The build's map step on records already on the device (bench/bench_gpu.py): "
                "each stage timed with CUDA events, median of the runs. Min bytes: each input "
                "column read once, each output written once (lookup and hash tables not "
                "counted); of d2d copy: those bytes per second over a device-to-device copy's "
                "(read + write) on the same card.",
                "",
                *report,
                "",
                *lines,
            ]
        )
        write_section(args.results, HEADING, body)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
