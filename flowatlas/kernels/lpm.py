"""Longest-prefix match over a compiled prefix table: one per-address body, two drivers.

A compiled table (see :mod:`flowatlas.classify.table`) is a step function over the 128-bit
address space: sorted interval starts ``(starts_hi, starts_lo)`` with a value each (a network
id, or -1 for "no prefix"). Nested prefixes were resolved when the table was compiled, so a
lookup is "the value of the last start <= address". Two direct-index arrays make that one
memory access for most addresses:

- ``idx4``: one entry per IPv4 /24 (2^24 entries) of ``::ffff:0:0/96``;
- ``idx6``: one entry per top ``bits6`` bits of the upper 64 bits, for all other addresses.

An entry with the high bit set holds the answer itself (``value + 1``): one interval covers the
whole block. Otherwise it names a block whose interval range ``[blk_lo, blk_hi)`` is searched
by bisection. The body has no calls, so it compiles unchanged for the CPU (``numba.njit``)
and for CUDA (``numba.cuda.jit(device=True)``).
"""

from __future__ import annotations

import numba
import numpy as np

DIRECT = np.uint32(0x8000_0000)
V4_BLOCK_BITS = 24


def _lpm_body(hi, lo, starts_hi, starts_lo, values, idx4, idx6, blk_lo, blk_hi, shift6):
    """Value of the interval holding address (hi, lo); see the module docstring."""
    if hi == 0 and (lo >> np.uint64(32)) == np.uint64(0xFFFF):
        e = idx4[(lo >> np.uint64(8)) & np.uint64(0xFFFFFF)]
    else:
        e = idx6[hi >> shift6]
    if e >= np.uint32(0x80000000):
        return np.int32(e - np.uint32(0x80000000)) - np.int32(1)
    left = np.int64(blk_lo[e])
    right = np.int64(blk_hi[e])
    while right - left > 1:
        mid = (left + right) >> 1
        sh = starts_hi[mid]
        if sh < hi or (sh == hi and starts_lo[mid] <= lo):
            left = mid
        else:
            right = mid
    return values[left]


lpm_one = numba.njit(inline="always", nogil=True, cache=True)(_lpm_body)


@numba.njit(parallel=True, nogil=True, cache=True)
def _lookup_cpu(hi, lo, out, starts_hi, starts_lo, values, idx4, idx6, blk_lo, blk_hi, shift6):
    for i in numba.prange(hi.size):
        out[i] = lpm_one(
            hi[i], lo[i], starts_hi, starts_lo, values, idx4, idx6, blk_lo, blk_hi, shift6
        )


@numba.njit(nogil=True, cache=True)
def _lookup_serial(hi, lo, out, starts_hi, starts_lo, values, idx4, idx6, blk_lo, blk_hi, shift6):
    for i in range(hi.size):
        out[i] = lpm_one(
            hi[i], lo[i], starts_hi, starts_lo, values, idx4, idx6, blk_lo, blk_hi, shift6
        )


def lookup_cpu(
    index: LpmArrays, hi: np.ndarray, lo: np.ndarray, *, parallel: bool = True
) -> np.ndarray:
    """Values (int32, -1 = no match) for addresses (hi, lo) on the CPU."""
    hi = np.ascontiguousarray(hi, dtype=np.uint64)
    lo = np.ascontiguousarray(lo, dtype=np.uint64)
    out = np.empty(hi.size, dtype=np.int32)
    fn = _lookup_cpu if parallel and hi.size > 50_000 else _lookup_serial
    fn(hi, lo, out, *index.arrays())
    return out


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

    __slots__ = ("blk_hi", "blk_lo", "idx4", "idx6", "shift6", "starts_hi", "starts_lo", "values")

    def __init__(self, starts_hi, starts_lo, values, idx4, idx6, blk_lo, blk_hi, shift6) -> None:
        self.starts_hi = starts_hi
        self.starts_lo = starts_lo
        self.values = values
        self.idx4 = idx4
        self.idx6 = idx6
        self.blk_lo = blk_lo
        self.blk_hi = blk_hi
        self.shift6 = shift6

    def arrays(self) -> tuple:
        return (
            self.starts_hi,
            self.starts_lo,
            self.values,
            self.idx4,
            self.idx6,
            self.blk_lo,
            self.blk_hi,
            self.shift6,
        )

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays()[:-1])

    def to_device(self) -> LpmArrays:
        """A copy whose arrays live on the current CUDA device."""
        from numba import cuda

        return LpmArrays(*(cuda.to_device(a) for a in self.arrays()[:-1]), self.shift6)


# --------------------------------------------------------------------------- index building


@numba.njit(cache=True)
def _build_index(starts_hi, starts_lo, values, bits6):  # pragma: no cover - compiled
    """Direct-index arrays over a step function (starts sorted, starts[0] == 0)."""
    k = starts_hi.size
    n4 = 1 << 24
    n6 = 1 << bits6
    idx4 = np.empty(n4, dtype=np.uint32)
    idx6 = np.empty(n6, dtype=np.uint32)
    # at most one block per entry; trimmed below
    blk_lo = np.empty(n4 + n6, dtype=np.uint32)
    blk_hi = np.empty(n4 + n6, dtype=np.uint32)
    nblk = 0
    shift6 = np.uint64(64 - bits6)

    # IPv6 (and everything outside ::ffff:0:0/96): blocks of the upper 64 bits
    j = 0  # interval containing the current block start
    for b in range(n6):
        bstart_hi = np.uint64(b) << shift6
        bend_hi = bstart_hi | ((np.uint64(1) << shift6) - np.uint64(1))
        while (
            j + 1 < k
            and starts_hi[j + 1] <= bstart_hi
            and not (starts_hi[j + 1] == bstart_hi and starts_lo[j + 1] > 0)
        ):
            j += 1
        # last interval starting at or before the block end (bend_hi, all ones)
        r = j
        while r + 1 < k and starts_hi[r + 1] <= bend_hi:
            r += 1
        if r == j:
            idx6[b] = np.uint32(0x80000000) | np.uint32(values[j] + 1)
        else:
            idx6[b] = np.uint32(nblk)
            blk_lo[nblk] = j
            blk_hi[nblk] = r + 1
            nblk += 1
        j = r

    # IPv4-mapped: ::ffff:a.b.c.0/120 blocks
    base_lo = np.uint64(0xFFFF00000000)
    # first interval containing ::ffff:0.0.0.0
    j = 0
    while j + 1 < k and starts_hi[j + 1] == 0 and starts_lo[j + 1] <= base_lo:
        j += 1
    for b in range(n4):
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
            idx4[b] = np.uint32(nblk)
            blk_lo[nblk] = j
            blk_hi[nblk] = r + 1
            nblk += 1
        j = r
    return idx4, idx6, blk_lo[:nblk].copy(), blk_hi[:nblk].copy()


def build_index(
    starts_hi: np.ndarray, starts_lo: np.ndarray, values: np.ndarray, bits6: int = 20
) -> LpmArrays:
    """Build the lookup arrays for a step function (starts sorted ascending, first = ::)."""
    starts_hi = np.ascontiguousarray(starts_hi, dtype=np.uint64)
    starts_lo = np.ascontiguousarray(starts_lo, dtype=np.uint64)
    values = np.ascontiguousarray(values, dtype=np.int32)
    if starts_hi.size == 0 or starts_hi[0] != 0 or starts_lo[0] != 0:
        raise ValueError("a step function must start at address ::")
    if not 8 <= bits6 <= 28:
        raise ValueError("bits6 must be between 8 and 28")
    if values.size and int(values.max()) >= 0x7FFF_FFFF:
        raise ValueError("network ids must be below 2^31 - 1")
    idx4, idx6, blk_lo, blk_hi = _build_index(starts_hi, starts_lo, values, bits6)
    return LpmArrays(
        starts_hi, starts_lo, values, idx4, idx6, blk_lo, blk_hi, np.uint64(64 - bits6)
    )
