"""Orient flow records and turn them into cube cells: arrays in, arrays out.

Per-row bodies, each compiled for the CPU here and for CUDA in :mod:`.cuda`:

- ``_orient_body``: which end is ours (direction), which region the flow belongs to, which
  interface link (exporter + interface: transit, IX, private fibre) carries it, and the
  network type that link gives its flows (Migration for private fibre), if any;
- ``_cell_body``: the sampling-corrected volume and packets (with 64-bit overflow detection)
  and the packed cell key (time bucket, region, network type, direction, IP version), put
  together from pieces (the multiplier, its overflow limit, the corrected counters, the
  key) that the fused kernel in :mod:`.records` calls as well.

Cell keys pack the dimensions into one int64 so that grouping is integer work::

    cell = bucket << 15 | region << 9 | network_type << 3 | direction << 1 | is_v6

with up to 64 regions and 64 network types (checked when the build is planned).
"""

from __future__ import annotations

import numba
import numpy as np

from flowatlas import kernel_cache
from flowatlas.kernels import parallel_allowed

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

INGRESS, EGRESS, INTERNAL, TRANSIT = 0, 1, 2, 3
DIM_BITS = 15
REGION_SHIFT, TYPE_SHIFT, DIR_SHIFT = 9, 3, 1
MAX_REGIONS = 64
MAX_TYPES = 64

#: quarantine reasons the build can find in archive rows (code -> text)
REASON_OK = 0
REASON_OVERFLOW = 1
REASONS = {REASON_OVERFLOW: "volume_overflow"}  # bytes x sampling_rate exceeds 64 bits


def _orient_body(
    src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys, rule_types, rule_links
):
    """(direction, region, remote_is_dst, link_type, link) of one flow record.

    src_reg/dst_reg: region id of the address if it is one of ours, else -1.
    exp_reg: region id of the exporter (0 = not configured); it wins over prefixes.
    rule_keys: sorted ``exporter_id << 32 | ifindex`` of the interface links' interfaces;
    rule_types their network type codes (-1: the link sets none), rule_links the index of
    their link. The interface that faces the remote end is the one checked. ``link`` is -1
    where no interface link carries the flow, and for internal flows (they go to their
    region's catch-all link).
    """
    if dst_reg >= 0 and src_reg < 0:
        direction = 0
        region = dst_reg
        remote_is_dst = False
        ext_if = in_if
    elif src_reg >= 0 and dst_reg < 0:
        direction = 1
        region = src_reg
        remote_is_dst = True
        ext_if = out_if
    elif src_reg >= 0:
        direction = 2
        region = src_reg
        remote_is_dst = True
        ext_if = in_if
    else:
        direction = 3
        region = 0
        remote_is_dst = False
        ext_if = in_if
    if exp_reg > 0:
        region = exp_reg
    link_type = -1
    link = -1
    if rule_keys.size > 0 and exp_id >= 0:
        key = (np.uint64(exp_id) << np.uint64(32)) | np.uint64(ext_if)
        left = 0
        right = rule_keys.size
        while left < right:
            mid = (left + right) >> 1
            if rule_keys[mid] < key:
                left = mid + 1
            else:
                right = mid
        if left < rule_keys.size and rule_keys[left] == key:
            link_type = rule_types[left]
            if direction != 2:
                link = rule_links[left]
    return direction, region, remote_is_dst, link_type, link


def _multiplier_body(rate, scaled):
    """The sampling correction of one record: its rate, or 1 where the archive's counts are
    scaled already or the rate says unsampled (0 or 1)."""
    return np.uint64(rate) if not scaled and rate > 1 else np.uint64(1)


def _limit_body(mult):
    """The largest count that ``mult`` (1 or more) times fits 64 bits: a 64-bit division,
    which callers make once per rate (the fused kernel) or only for sampled records."""
    return np.uint64(0xFFFFFFFFFFFFFFFF) // mult


def _counters_body(nbytes, npackets, mult, limit):
    """(volume, packets, reason): the counts times ``mult``, or zeros and
    :data:`REASON_OVERFLOW` where either count exceeds ``limit`` (:func:`_limit_body`)."""
    if nbytes > limit or npackets > limit:
        vol = np.uint64(0)
        pk = np.uint64(0)
        reason = np.uint8(REASON_OVERFLOW)
    else:
        vol = nbytes * mult
        pk = npackets * mult
        reason = np.uint8(0)
    return vol, pk, reason


def _cell_key_body(bucket, region, ntype, direction, is_v6):
    """The packed cell key of a time bucket (index) and dimension codes (module docstring)."""
    return (
        (np.int64(bucket) << np.int64(15))
        | (np.int64(region) << np.int64(9))
        | (np.int64(ntype) << np.int64(3))
        | (np.int64(direction) << np.int64(1))
        | np.int64(is_v6)
    )


multiplier_one = numba.njit(inline="always", nogil=True, cache=True)(_multiplier_body)
limit_one = numba.njit(inline="always", nogil=True, cache=True)(_limit_body)
counters_one = numba.njit(inline="always", nogil=True, cache=True)(_counters_body)
cell_key_one = numba.njit(inline="always", nogil=True, cache=True)(_cell_key_body)
#: the pieces :func:`_cell_body` calls, by name: :mod:`.cuda` compiles the same body with
#: their device twins in their place
CELL_PIECES = {
    "multiplier_one": _multiplier_body,
    "limit_one": _limit_body,
    "counters_one": _counters_body,
    "cell_key_one": _cell_key_body,
}


def _cell_body(t_us, bucket_us, region, ntype, direction, is_v6, nbytes, npackets, rate, scaled):
    """(cell, volume, packets, reason) of one oriented record, from the pieces above (the
    fused kernel, :func:`flowatlas.kernels.records.records_cpu`, calls them itself: it keeps
    the last bucket and the last rate's limit instead of dividing per record)."""
    mult = multiplier_one(rate, scaled)
    limit = limit_one(mult) if mult > np.uint64(1) else np.uint64(0xFFFFFFFFFFFFFFFF)
    vol, pk, reason = counters_one(nbytes, npackets, mult, limit)
    # floor division, also for times before 1970
    return cell_key_one(t_us // bucket_us, region, ntype, direction, is_v6), vol, pk, reason


orient_one = numba.njit(inline="always", nogil=True, cache=True)(_orient_body)
cell_one = numba.njit(inline="always", nogil=True, cache=True)(_cell_body)


def _orient_loop(src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys, rule_types,
                rule_links, direction, region, remote_is_dst, link_type, link):  # fmt: skip
    for i in numba.prange(src_reg.size):  # prange is range when not parallel
        d, r, rd, lt, lk = orient_one(
            src_reg[i],
            dst_reg[i],
            exp_reg[i],
            exp_id[i],
            in_if[i],
            out_if[i],
            rule_keys,
            rule_types,
            rule_links,
        )
        direction[i] = d
        region[i] = r
        remote_is_dst[i] = rd
        link_type[i] = lt
        link[i] = lk


def _cell_loop(t_us, bucket_us, region, ntype, direction, is_v6, nbytes, npackets, rate, scaled,
              cell, vol, pk, reason):  # fmt: skip
    for i in numba.prange(t_us.size):
        c, v, p, q = cell_one(
            t_us[i],
            bucket_us,
            region[i],
            ntype[i],
            direction[i],
            is_v6[i],
            nbytes[i],
            npackets[i],
            rate[i],
            scaled,
        )
        cell[i] = c
        vol[i] = v
        pk[i] = p
        reason[i] = q


_orient_par = numba.njit(parallel=True, nogil=True, cache=True)(_orient_loop)
_orient_ser = numba.njit(nogil=True, cache=True)(_orient_loop)
_cell_par = numba.njit(parallel=True, nogil=True, cache=True)(_cell_loop)
_cell_ser = numba.njit(nogil=True, cache=True)(_cell_loop)
PARALLEL_MIN = 200_000  # below this, numba's thread pool costs more than it saves


def orient_cpu(
    src_reg: np.ndarray,
    dst_reg: np.ndarray,
    exp_reg: np.ndarray,
    exp_id: np.ndarray,
    in_if: np.ndarray,
    out_if: np.ndarray,
    rule_keys: np.ndarray,
    rule_types: np.ndarray,
    rule_links: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per record: direction (uint8), region (int16), remote_is_dst (bool), link_type (int16)
    and link (int16: the index in ``rule_links`` of the interface link carrying it, -1 none).

    ``rule_links`` defaults to each rule being its own link (0, 1, ...).
    """
    n = src_reg.size
    direction = np.empty(n, np.uint8)
    region = np.empty(n, np.int16)
    remote_is_dst = np.empty(n, np.bool_)
    link_type = np.empty(n, np.int16)
    link = np.empty(n, np.int16)
    if rule_links is None:
        rule_links = np.arange(np.asarray(rule_keys).size, dtype=np.int16)
    (_orient_par if n >= PARALLEL_MIN and parallel_allowed() else _orient_ser)(
        np.ascontiguousarray(src_reg, np.int32),
        np.ascontiguousarray(dst_reg, np.int32),
        np.ascontiguousarray(exp_reg, np.int16),
        np.ascontiguousarray(exp_id, np.int32),
        np.ascontiguousarray(in_if, np.uint32),
        np.ascontiguousarray(out_if, np.uint32),
        np.ascontiguousarray(rule_keys, np.uint64),
        np.ascontiguousarray(rule_types, np.int16),
        np.ascontiguousarray(rule_links, np.int16),
        direction,
        region,
        remote_is_dst,
        link_type,
        link,
    )
    return direction, region, remote_is_dst, link_type, link


def cells_cpu(
    t_us: np.ndarray,
    bucket_us: int,
    region: np.ndarray,
    ntype: np.ndarray,
    direction: np.ndarray,
    is_v6: np.ndarray,
    nbytes: np.ndarray,
    npackets: np.ndarray,
    rate: np.ndarray,
    scaled: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per record: cell key (int64), volume and packets (uint64), quarantine reason (uint8)."""
    n = t_us.size
    cell = np.empty(n, np.int64)
    vol = np.empty(n, np.uint64)
    pk = np.empty(n, np.uint64)
    reason = np.empty(n, np.uint8)
    (_cell_par if n >= PARALLEL_MIN and parallel_allowed() else _cell_ser)(
        np.ascontiguousarray(t_us, np.int64),
        np.int64(bucket_us),
        np.ascontiguousarray(region, np.int16),
        np.ascontiguousarray(ntype, np.int16),
        np.ascontiguousarray(direction, np.uint8),
        np.ascontiguousarray(is_v6, np.uint8),
        np.ascontiguousarray(nbytes, np.uint64),
        np.ascontiguousarray(npackets, np.uint64),
        np.ascontiguousarray(rate, np.uint32),
        bool(scaled),
        cell,
        vol,
        pk,
        reason,
    )
    return cell, vol, pk, reason


def unpack_cells(cell: np.ndarray) -> dict[str, np.ndarray]:
    """Split packed cell keys into their dimensions (bucket index and dimension codes)."""
    cell = np.asarray(cell, dtype=np.int64)
    return {
        "bucket": cell >> DIM_BITS,
        "region": (cell >> REGION_SHIFT) & 63,
        "network_type": (cell >> TYPE_SHIFT) & 63,
        "direction": (cell >> DIR_SHIFT) & 3,
        "is_v6": cell & 1,
    }
