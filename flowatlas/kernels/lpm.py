"""Longest-prefix match over a compiled prefix table: one per-address body, two drivers.

A compiled table (see :mod:`flowatlas.classify.table`) is a step function over the 128-bit
address space: sorted interval starts ``(starts_hi, starts_lo)`` with a value each (a network
id, or -1 for "no prefix"). Nested prefixes were resolved when the table was compiled, so a
lookup is "the value of the last start <= address". Index arrays make that one to a few memory
accesses:

- ``idx4``: one entry per IPv4 /24 (2^24 entries) of ``::ffff:0:0/96``; a flat first level
  measured ~25x faster than bisection over the whole table;
- ``idx6``: one entry per top ``bits6`` bits of the upper 64 bits, for all other addresses;
  crowded IPv6 blocks are split further by ``nodes`` (256 entries each, 8 bits per level) so
  that a /48 lookup walks two or three small nodes instead of bisecting thousands of starts.

An entry is one uint32: with bit 31 set it holds the answer itself (``value + 1``: one interval
covers the block); with bit 30 set it names a node; otherwise a leaf, a short interval range
``[leaf_lo, leaf_hi)`` searched by bisection. The body has no calls, so it compiles unchanged
for the CPU (``numba.njit``) and for CUDA (``numba.cuda.jit(device=True)``).

The CPU body is compiled without numba's reference counting (``_nrt=False``): passing arrays to
an inlined function otherwise costs an atomic increment per address, which serialises the cache
misses and measured 10x slower here. Index arrays are allocated by NumPy, which asks Linux for
transparent huge pages; the 64 MiB ``idx4`` then costs no TLB miss per lookup (4x measured).
"""

from __future__ import annotations

import numba
import numpy as np

DIRECT = np.uint32(0x8000_0000)
NODE = np.uint32(0x4000_0000)
V4_BLOCK_BITS = 24
STRIDE = 8
#: blocks with at most this many intervals are bisected rather than split into nodes
LEAF_MAX = 8


def _lpm_body(
    hi, lo, starts_hi, starts_lo, values, idx4, idx6, nodes, leaf_lo, leaf_hi, shift6
):  # pragma: no cover - compiled
    """Value of the interval holding address (hi, lo); see the module docstring."""
    if hi == 0 and (lo >> np.uint64(32)) == np.uint64(0xFFFF):
        e = idx4[(lo >> np.uint64(8)) & np.uint64(0xFFFFFF)]
    else:
        e = idx6[hi >> shift6]
        shift = shift6
        while (e & np.uint32(0xC0000000)) == np.uint32(0x40000000):
            shift -= np.uint64(8)
            base = np.uint64(e & np.uint32(0x3FFFFFFF)) << np.uint64(8)
            e = nodes[base | ((hi >> shift) & np.uint64(0xFF))]
    if e >= np.uint32(0x80000000):
        return np.int32(e - np.uint32(0x80000000)) - np.int32(1)
    left = np.int64(leaf_lo[e])
    right = np.int64(leaf_hi[e])
    while right - left > 1:
        mid = (left + right) >> 1
        sh = starts_hi[mid]
        if sh < hi or (sh == hi and starts_lo[mid] <= lo):
            left = mid
        else:
            right = mid
    return values[left]


def _jit_no_nrt(**options):
    """``numba.njit`` without reference counting where this numba allows it (see above)."""
    try:
        numba.njit(_nrt=False)
        return numba.njit(_nrt=False, **options)
    except TypeError:  # pragma: no cover - a numba without the private flag
        return numba.njit(**options)


lpm_one = _jit_no_nrt(inline="always", nogil=True, cache=True)(_lpm_body)


@numba.njit(parallel=True, nogil=True, cache=True)
def _lookup_cpu(
    hi, lo, out, starts_hi, starts_lo, values, idx4, idx6, nodes, leaf_lo, leaf_hi, shift6
):  # pragma: no cover - compiled
    for i in numba.prange(hi.size):
        out[i] = lpm_one(
            hi[i], lo[i], starts_hi, starts_lo, values, idx4, idx6, nodes, leaf_lo, leaf_hi, shift6
        )


@_jit_no_nrt(nogil=True, cache=True)
def _lookup_serial(
    hi, lo, out, starts_hi, starts_lo, values, idx4, idx6, nodes, leaf_lo, leaf_hi, shift6
):  # pragma: no cover - compiled
    for i in range(hi.size):
        out[i] = lpm_one(
            hi[i], lo[i], starts_hi, starts_lo, values, idx4, idx6, nodes, leaf_lo, leaf_hi, shift6
        )


def lookup_cpu(
    index: LpmArrays, hi: np.ndarray, lo: np.ndarray, *, parallel: bool = True
) -> np.ndarray:
    """Values (int32, -1 = no match) for addresses (hi, lo) on the CPU."""
    hi = np.ascontiguousarray(hi, dtype=np.uint64)
    lo = np.ascontiguousarray(lo, dtype=np.uint64)
    if hi.shape != lo.shape:
        raise ValueError(f"hi and lo differ in shape: {hi.shape} vs {lo.shape}")
    out = np.empty(hi.size, dtype=np.int32)
    fn = _lookup_cpu if parallel and hi.size > 50_000 else _lookup_serial
    fn(hi.reshape(-1), lo.reshape(-1), out, *index.arrays())
    return out.reshape(hi.shape)


def lookup_cuda(
    index: LpmArrays, hi, lo, out=None, *, threads: int = 256, blocks: int | None = None
):
    """Values for device (or host) arrays (hi, lo) on the GPU; returns a device array.

    ``index`` should already be on the device (:meth:`LpmArrays.to_device`); host arrays are
    copied over, which is slow for repeated calls.
    """
    from numba import cuda

    from flowatlas.kernels.cuda import lpm_kernel as kernel

    n = hi.shape[0]
    if out is None:
        out = cuda.device_array(n, dtype=np.int32)
    if blocks is None:
        blocks = max(1, min((n + threads - 1) // threads, 65_535))
    if n:
        kernel[blocks, threads](hi, lo, out, *index.arrays())
    return out


class LpmArrays:
    """The arrays the lookup body reads; host (NumPy) or device (numba.cuda) resident."""

    __slots__ = (
        "idx4",
        "idx6",
        "leaf_hi",
        "leaf_lo",
        "nodes",
        "shift6",
        "starts_hi",
        "starts_lo",
        "values",
    )

    def __init__(
        self, starts_hi, starts_lo, values, idx4, idx6, nodes, leaf_lo, leaf_hi, shift6
    ) -> None:
        self.starts_hi = starts_hi
        self.starts_lo = starts_lo
        self.values = values
        self.idx4 = idx4
        self.idx6 = idx6
        self.nodes = nodes
        self.leaf_lo = leaf_lo
        self.leaf_hi = leaf_hi
        self.shift6 = shift6

    def arrays(self) -> tuple:
        """The body's arguments after the address, in order."""
        return (
            self.starts_hi,
            self.starts_lo,
            self.values,
            self.idx4,
            self.idx6,
            self.nodes,
            self.leaf_lo,
            self.leaf_hi,
            self.shift6,
        )

    @property
    def nbytes(self) -> int:
        """Memory the lookup reads from (host or device)."""
        return sum(int(a.nbytes) for a in self.arrays()[:-1])

    def stats(self) -> dict[str, int]:
        """Sizes of the index parts (for benchmarks and `classify compile`)."""
        return {
            "intervals": int(self.starts_hi.size),
            "bits6": 64 - int(self.shift6),
            "nodes": int(self.nodes.size) // 256,
            "leaves": int(self.leaf_lo.size),
            "bytes": self.nbytes,
        }

    def to_device(self) -> LpmArrays:
        """A copy whose arrays live on the current CUDA device."""
        from numba import cuda

        return LpmArrays(*(cuda.to_device(a) for a in self.arrays()[:-1]), self.shift6)


# --------------------------------------------------------------------------- index building


@numba.njit(cache=True, inline="always")
def _after(sh, sl, h, l):  # pragma: no cover - compiled
    """True if start (sh, sl) lies after address (h, l)."""
    return sh > h or (sh == h and sl > l)


@numba.njit(cache=True)
def _fill6(
    starts_hi, starts_lo, values, entries, first, base, shift, j, leaf_lo, leaf_hi, nleaf,
    work, work_base, nwork,
):  # fmt: skip  # pragma: no cover - compiled
    """Decide 256 (or a root's worth of) entries from ``first``: hi-blocks of 2^shift from base.

    ``j`` is the interval holding the first block's start. A block inside one interval becomes a
    direct entry, a block with few intervals a leaf, a crowded one a node to split next round:
    its (slot, j) go to ``work`` and its base to ``work_base``. Returns (nleaf, nwork).
    """
    k = starts_hi.size
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    size_mask = (np.uint64(1) << np.uint64(shift)) - np.uint64(1)
    count = (1 << (64 - shift)) if first == 0 else 256
    for b in range(count):
        bs = base + (np.uint64(b) << np.uint64(shift))
        be = bs | size_mask
        while j + 1 < k and not _after(starts_hi[j + 1], starts_lo[j + 1], bs, np.uint64(0)):
            j += 1
        r = j
        while r + 1 < k and not _after(starts_hi[r + 1], starts_lo[r + 1], be, ones):
            r += 1
        if r == j:
            entries[first + b] = np.uint32(0x80000000) | np.uint32(values[j] + 1)
        elif r - j + 1 <= LEAF_MAX or shift < STRIDE:
            entries[first + b] = np.uint32(nleaf)
            leaf_lo[nleaf] = j
            leaf_hi[nleaf] = r + 1
            nleaf += 1
        else:
            work[nwork, 0] = first + b
            work[nwork, 1] = j
            work_base[nwork] = bs
            nwork += 1
        j = r
    return nleaf, nwork


@numba.njit(cache=True)
def _build6(starts_hi, starts_lo, values, bits6):  # pragma: no cover - compiled
    """Root entries then 256 per node, for everything outside ::ffff:0:0/96 (upper 64 bits)."""
    n6 = 1 << bits6
    k = starts_hi.size
    entries = np.empty(n6 + 256 * 256, dtype=np.uint32)
    leaf_lo = np.empty(k + 1, dtype=np.uint32)
    leaf_hi = np.empty(k + 1, dtype=np.uint32)
    work = np.empty((n6, 2), dtype=np.int64)
    work_base = np.empty(n6, dtype=np.uint64)
    shift = 64 - bits6
    nleaf, nwork = _fill6(
        starts_hi,
        starts_lo,
        values,
        entries,
        0,
        np.uint64(0),
        shift,
        0,
        leaf_lo,
        leaf_hi,
        0,
        work,
        work_base,
        0,
    )
    nodes = 0
    while nwork > 0:
        shift -= STRIDE
        nxt = np.empty((nwork * 256, 2), dtype=np.int64)
        nxt_base = np.empty(nwork * 256, dtype=np.uint64)
        nn = 0
        for q in range(nwork):
            first = n6 + 256 * nodes
            if first + 256 > entries.size:
                grown = np.empty(entries.size * 2, dtype=np.uint32)
                grown[: entries.size] = entries
                entries = grown
            entries[work[q, 0]] = np.uint32(0x40000000) | np.uint32(nodes)
            nodes += 1
            nleaf, nn = _fill6(
                starts_hi,
                starts_lo,
                values,
                entries,
                first,
                work_base[q],
                shift,
                work[q, 1],
                leaf_lo,
                leaf_hi,
                nleaf,
                nxt,
                nxt_base,
                nn,
            )
        work = nxt
        work_base = nxt_base
        nwork = nn
    return entries[: n6 + 256 * nodes], leaf_lo[:nleaf], leaf_hi[:nleaf]


@numba.njit(cache=True)
def _build4(starts_hi, starts_lo, values, idx4, leaf_lo, leaf_hi, nleaf):  # pragma: no cover
    """Fill idx4 (/24 blocks of ::ffff:0:0/96); leaves appended after ``nleaf``."""
    k = starts_hi.size
    base_lo = np.uint64(0xFFFF00000000)
    j = 0
    while j + 1 < k and starts_hi[j + 1] == 0 and starts_lo[j + 1] <= base_lo:
        j += 1
    for b in range(1 << 24):
        bs = base_lo | (np.uint64(b) << np.uint64(8))
        be = bs | np.uint64(0xFF)
        while j + 1 < k and starts_hi[j + 1] == 0 and starts_lo[j + 1] <= bs:
            j += 1
        r = j
        while r + 1 < k and starts_hi[r + 1] == 0 and starts_lo[r + 1] <= be:
            r += 1
        if r == j:
            idx4[b] = np.uint32(0x80000000) | np.uint32(values[j] + 1)
        else:
            idx4[b] = np.uint32(nleaf)
            leaf_lo[nleaf] = j
            leaf_hi[nleaf] = r + 1
            nleaf += 1
        j = r
    return nleaf


def _numpy_copy(a: np.ndarray) -> np.ndarray:
    """A NumPy-allocated copy (NumPy asks for huge pages on big arrays; numba does not)."""
    out = np.empty(a.shape, dtype=a.dtype)
    out[...] = a
    return out


def build_index(
    starts_hi: np.ndarray, starts_lo: np.ndarray, values: np.ndarray, bits6: int = 16
) -> LpmArrays:
    """Build the lookup arrays for a step function (starts sorted ascending, first = ::)."""
    starts_hi = _numpy_copy(np.ascontiguousarray(starts_hi, dtype=np.uint64))
    starts_lo = _numpy_copy(np.ascontiguousarray(starts_lo, dtype=np.uint64))
    values = _numpy_copy(np.ascontiguousarray(values, dtype=np.int32))
    if starts_hi.size == 0 or starts_hi[0] != 0 or starts_lo[0] != 0:
        raise ValueError("a step function must start at address ::")
    if not 8 <= bits6 <= 24:
        raise ValueError("bits6 must be between 8 and 24")
    if starts_hi.size >= 0x3FFF_FFFF:
        raise ValueError("too many intervals for 30-bit leaf and node ids")
    if values.size and int(values.max()) >= 0x7FFF_FFFF:
        raise ValueError("network ids must be below 2^31 - 1")
    entries, leaf_lo6, leaf_hi6 = _build6(starts_hi, starts_lo, values, bits6)
    n6 = 1 << bits6
    idx6 = _numpy_copy(entries[:n6])
    nodes = _numpy_copy(entries[n6:]) if entries.size > n6 else np.zeros(256, np.uint32)
    idx4 = np.empty(1 << V4_BLOCK_BITS, dtype=np.uint32)
    # every leaf holds an interval start of its own, so leaves never outnumber intervals
    leaf_lo = np.empty(leaf_lo6.size + starts_hi.size + 1, dtype=np.uint32)
    leaf_hi = np.empty_like(leaf_lo)
    leaf_lo[: leaf_lo6.size] = leaf_lo6
    leaf_hi[: leaf_hi6.size] = leaf_hi6
    nleaf = _build4(starts_hi, starts_lo, values, idx4, leaf_lo, leaf_hi, leaf_lo6.size)
    leaf_lo = _numpy_copy(leaf_lo[: max(nleaf, 1)])
    leaf_hi = _numpy_copy(leaf_hi[: max(nleaf, 1)])
    return LpmArrays(
        starts_hi, starts_lo, values, idx4, idx6, nodes, leaf_lo, leaf_hi, np.uint64(64 - bits6)
    )
