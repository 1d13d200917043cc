"""Longest-prefix match over a compiled prefix table: one per-address body, two drivers.

A compiled table (see :mod:`flowatlas.classify.table`) is a step function over the 128-bit
address space: sorted interval starts ``(starts_hi, starts_lo)`` with a value each (a network
id, or -1 for "no prefix"). Nested prefixes were resolved when the table was compiled, so a
lookup is "the value of the last start <= address". A multibit trie over the address makes
that one to a few memory accesses:

- ``idx4``: one entry per IPv4 /``bits4`` block of ``::ffff:0:0/96``: 2^24 entries (/24s,
  64 MiB) for tables with many IPv4 intervals, where a flat first level measured ~25x faster
  than bisection over the whole table; 2^16 (/16s, 256 KiB) for small ones, whose few
  crowded /16s split into nodes as crowded IPv6 blocks do (:func:`default_bits4`): a build
  touches 64 MiB less fresh memory per table;
- ``idx6``: one entry per top ``bits6`` bits, for all other addresses;
- nodes of 256 entries each, splitting a crowded block by its next 8 bits (down to single
  addresses if need be: a /24 with many sub-prefixes gets a last-level node, DIR-24-8 style).
  Stored compressed, as in tree-bitmap tries and Poptrie: a node's entries form runs of equal
  ones, kept once each in ``runs``; its 64-byte head in ``heads`` (one cache line) has a bitmap
  of where runs start and a popcount finds the run of an entry. A full routing table's nodes
  take 10 MB this way instead of 30 MB, so they stay in cache.

- skips: a chain of nodes under an IPv6 root entry that each let one path through (all
  other entries one answer: a network's local prefixes, 2620:a0::/44 three nodes below the
  2620::/16 root entry) is one compare of up to 56 address bits (:func:`_skip_chains`).

An entry is one uint32: with bit 31 set it holds the answer itself (``value + 1``: one interval
covers the block); with bit 30 set it names a node; otherwise it is a leaf, at most
:data:`LEAF_MAX` intervals from interval ``j`` (bits 0-26) with ``count - 1`` in bits 27-29,
searched by bisection within one or two cache lines, or, with bits 27-29 clear (no leaf has
one interval), a skip (IPv6 root entries only). Leaves are only made for blocks of at most
a /64 (IPv4 /24 blocks, deep IPv6 ones): bigger IPv6 blocks split until every entry is direct,
since compressed nodes stay in cache where the interval arrays do not. The body has no calls, so
it compiles unchanged for the CPU (``numba.njit``) and for CUDA (``numba.cuda.jit(device=True)``).

The CPU body is compiled without numba's reference counting (``_nrt=False``): passing arrays to
an inlined function otherwise costs an atomic increment per address, which serialises the cache
misses and measured 10x slower here. Index arrays are allocated by NumPy, which asks Linux for
transparent huge pages; a 64 MiB ``idx4`` then costs no TLB miss per lookup (4x measured).
"""

from __future__ import annotations

import ctypes
import functools
import sys

import numba
import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from flowatlas import kernel_cache
from flowatlas.kernels import parallel_allowed

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

DIRECT = np.uint32(0x8000_0000)
NODE = np.uint32(0x4000_0000)
V4_BLOCK_BITS = 24
#: the small IPv4 root's bits (/16 blocks, 256 KiB), and every size an IPv4 root may have
V4_SMALL_BITS = 16
V4_BITS = (8, 16, 24)
#: tables with at most this many IPv4 intervals get the small IPv4 root: up to ~5 k (the
#: heavy table coarsened) it looked up the world's and the heavy archive's addresses as fast as
#: the 2^24 root or faster, from ~11 k slower, at 22 k 1.4x (bench/bench_roots.py); the fused
#: map kernel was no slower with it on either workload (the small root stays in cache)
SMALL_V4_INTERVALS = 8192
STRIDE = 8
#: blocks with at most this many intervals are bisected rather than split into nodes ...
LEAF_MAX = 8
#: ... if they are no bigger than this many addresses' bits (a /64: IPv4 /24 blocks and deep
#: IPv6 ones). Bigger blocks split until direct: compressed nodes stay in cache where a leaf's
#: interval arrays miss; 1.4x faster uniform IPv6 lookups measured on a full routing table.
LEAF_SHIFT_MAX = 64
#: ... and for blocks under the IPv4 root, no bigger than a /24: a /16 block of the small root
#: holding a few intervals is a node, its /24s mostly direct entries, rather than a leaf that
#: a quarter of the world's IPv4 lookups bisected (6 ns against 1.6 ns an address measured)
V4_LEAF_SHIFT_MAX = 8
LEAF_J_BITS = 27
#: the most address bits one skip compares (seven nodes' bytes; see :func:`_skip_chains`)
SKIP_MAX_BITS = 56
#: chains of nodes with one path each become skips from this many bits (one node) on
SKIP_MIN_BITS = 8
#: how many addresses ahead the CPU drivers prefetch IPv4 index entries (16-32 measured best)
PREFETCH_DISTANCE = 24
# LLVM names the prefetch intrinsic by pointer type; opaque pointers since LLVM 15
_PREFETCH_NAME = "llvm.prefetch.p0" if _llvm.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"


def _lpm_body(
    hi, lo, starts_hi, starts_lo, values, idx4, idx6, heads, runs, shift6, shift4
):  # pragma: no cover
    """Value of the interval holding address (hi, lo); see the module docstring.

    ``shift4`` (uint64): the IPv4 address bits below an ``idx4`` block, 32 - bits4."""
    # IPv4-mapped (::ffff:0:0/96)? One compare, no short-circuit branch: measured faster
    if (hi | ((lo >> np.uint64(32)) ^ np.uint64(0xFFFF))) == np.uint64(0):
        e = idx4[(lo & np.uint64(0xFFFFFFFF)) >> shift4]
        if e >= np.uint32(0x80000000):  # the common case, returned early: ~1.4x measured
            return np.int32(e - np.uint32(0x80000000)) - np.int32(1)
        shift = shift4  # bits of the 128-bit address below the block
    else:
        e = idx6[hi >> shift6]
        shift = shift6 + np.uint64(64)
        if e < np.uint32(0x08000000):
            # a skip (see _skip_chains): the next k address bits against the one path of a
            # chain of nodes; the entry at the chain's end, or what every other path gives
            h = np.uint64(e) << np.uint64(3)
            shift -= heads[h + np.uint64(1)]
            pair = heads[h + np.uint64(3)]
            if ((hi >> (shift - np.uint64(64))) & heads[h + np.uint64(2)]) == heads[h]:
                e = np.uint32(pair & np.uint64(0xFFFFFFFF))
            else:
                e = np.uint32(pair >> np.uint64(32))
    while (e & np.uint32(0xC0000000)) == np.uint32(0x40000000):
        shift -= np.uint64(8)
        if shift >= np.uint64(64):
            byte = (hi >> (shift - np.uint64(64))) & np.uint64(0xFF)
        else:
            byte = (lo >> shift) & np.uint64(0xFF)
        # the node's head: which of its 256 entries start a run, and where each 64-entry
        # quarter's runs begin; the entry is the run holding `byte`, counted by popcount
        # (written out bit-parallel: LLVM turns it into one POPCNT, CUDA into POPC)
        h = np.uint64(e & np.uint32(0x3FFFFFFF)) << np.uint64(3)
        quarter = byte >> np.uint64(6)
        x = heads[h + quarter] & ((np.uint64(2) << (byte & np.uint64(63))) - np.uint64(1))
        x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
        x = (x & np.uint64(0x3333333333333333)) + (
            (x >> np.uint64(2)) & np.uint64(0x3333333333333333)
        )
        x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
        x = (x * np.uint64(0x0101010101010101)) >> np.uint64(56)
        e = runs[heads[h + np.uint64(4) + quarter] + x - np.uint64(1)]
    if e >= np.uint32(0x80000000):
        return np.int32(e - np.uint32(0x80000000)) - np.int32(1)
    left = np.int64(e & np.uint32(0x7FFFFFF))
    right = left + np.int64(e >> np.uint32(27)) + 1
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


@intrinsic
def _prefetch(typingctx, arr, idx):  # pragma: no cover - compiled
    """A cache prefetch hint for ``arr[idx]`` (LLVM's llvm.prefetch; CPU drivers only)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i])
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH_NAME)
        # read, keep in all cache levels, data cache
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@_jit_no_nrt(inline="always", nogil=True, cache=True)
def _prefetch_ahead(hi, lo, j, idx4, shift4):  # pragma: no cover - compiled
    """Prefetch the root entry of IPv4 address j: the one miss an IPv4 lookup mostly has
    (~1.4x measured; IPv6 lookups, whose misses are deeper in the trie, gained nothing)."""
    if j < hi.size:
        h = hi[j]
        low = lo[j]
        if (h | ((low >> np.uint64(32)) ^ np.uint64(0xFFFF))) == np.uint64(0):
            _prefetch(idx4, (low & np.uint64(0xFFFFFFFF)) >> shift4)


@numba.njit(parallel=True, nogil=True, cache=True)
def _lookup_cpu(
    hi, lo, out, starts_hi, starts_lo, values, idx4, idx6, heads, runs, shift6, shift4
):  # pragma: no cover - compiled
    for i in numba.prange(hi.size):
        _prefetch_ahead(hi, lo, i + PREFETCH_DISTANCE, idx4, shift4)
        out[i] = lpm_one(
            hi[i], lo[i], starts_hi, starts_lo, values, idx4, idx6, heads, runs, shift6, shift4
        )


@_jit_no_nrt(nogil=True, cache=True)
def _lookup_serial(
    hi, lo, out, starts_hi, starts_lo, values, idx4, idx6, heads, runs, shift6, shift4
):  # pragma: no cover - compiled
    for i in range(hi.size):
        _prefetch_ahead(hi, lo, i + PREFETCH_DISTANCE, idx4, shift4)
        out[i] = lpm_one(
            hi[i], lo[i], starts_hi, starts_lo, values, idx4, idx6, heads, runs, shift6, shift4
        )


def lookup_cpu(
    index: LpmArrays, hi: np.ndarray, lo: np.ndarray, *, parallel: bool = True
) -> np.ndarray:
    """Values (int32, -1 = no match) for addresses (hi, lo) on the CPU.

    One thread inside :func:`~flowatlas.kernels.serial_kernels` (tasks running in threads
    supply the parallelism), as the other kernels do.
    """
    hi = np.ascontiguousarray(hi, dtype=np.uint64)
    lo = np.ascontiguousarray(lo, dtype=np.uint64)
    if hi.shape != lo.shape:
        raise ValueError(f"hi and lo differ in shape: {hi.shape} vs {lo.shape}")
    out = np.empty(hi.size, dtype=np.int32)
    fn = _lookup_cpu if parallel and parallel_allowed() and hi.size > 50_000 else _lookup_serial
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
        "heads", "idx4", "idx6", "runs", "shift4", "shift6", "starts_hi", "starts_lo", "values",
    )  # fmt: skip

    def __init__(
        self, starts_hi, starts_lo, values, idx4, idx6, heads, runs, shift6, shift4
    ) -> None:
        self.starts_hi = starts_hi
        self.starts_lo = starts_lo
        self.values = values
        self.idx4 = idx4
        self.idx6 = idx6
        self.heads = heads
        self.runs = runs
        self.shift6 = shift6
        self.shift4 = shift4

    def arrays(self) -> tuple:
        """The body's arguments after the address, in order: :meth:`buffers`, then the two
        roots' shifts."""
        return (*self.buffers(), self.shift6, self.shift4)

    def buffers(self) -> tuple:
        """The arrays alone, in the body's order (what a device copy moves)."""
        return (
            self.starts_hi,
            self.starts_lo,
            self.values,
            self.idx4,
            self.idx6,
            self.heads,
            self.runs,
        )

    @property
    def nbytes(self) -> int:
        """Memory the lookup reads from (host or device)."""
        return sum(int(a.nbytes) for a in self.buffers())

    def stats(self) -> dict[str, int]:
        """Sizes of the index parts (for benchmarks and `classify info`)."""
        return {
            "intervals": int(self.starts_hi.size),
            "bits6": 64 - int(self.shift6),
            "bits4": 32 - int(self.shift4),
            "nodes": int(self.heads.size) // 8,
            "runs": int(self.runs.size),
            "bytes": self.nbytes,
        }

    def to_device(self) -> LpmArrays:
        """A copy whose arrays live on the current CUDA device."""
        from numba import cuda

        return LpmArrays(*(cuda.to_device(a) for a in self.buffers()), self.shift6, self.shift4)


# --------------------------------------------------------------------------- index building


@numba.njit(cache=True, inline="always")
def _after(sh, sl, h, l):  # pragma: no cover - compiled
    """True if start (sh, sl) lies after address (h, l)."""
    return sh > h or (sh == h and sl > l)


@numba.njit(cache=True)
def _fill(
    starts_hi, starts_lo, values, entries, first, count, base_hi, base_lo, shift, j, work, nwork,
    leaf_shift,
):  # fmt: skip  # pragma: no cover - compiled
    """Decide ``count`` entries from ``entries[first]``: blocks of 2^shift addresses from base.

    ``j`` is the interval holding the first block's start. A block inside one interval becomes
    a direct entry, a small one (at most LEAF_MAX intervals, at most 2^leaf_shift addresses) a
    leaf, a crowded one a node to split next round: it is numbered ``nwork`` (nodes are
    numbered in the order they are queued) and its j, shift, base and leaf_shift go to
    ``work``, grown as needed. Returns (nwork, work).

    Blocks that follow a direct entry inside the same interval get the same entry in one
    tight loop (most of the 2^24 IPv4 /24 blocks of a table lie in long intervals).
    """
    k = starts_hi.size
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    b = -1
    while b + 1 < count:
        b += 1
        if shift >= 64:
            s6 = np.uint64(shift - 64)
            bs_hi = base_hi + (np.uint64(b) << s6)
            bs_lo = np.uint64(0)
            be_hi = bs_hi | ((np.uint64(1) << s6) - np.uint64(1))
            be_lo = ones
        else:
            s4 = np.uint64(shift)
            bs_hi = base_hi
            bs_lo = base_lo + (np.uint64(b) << s4)
            be_hi = bs_hi
            be_lo = bs_lo | ((np.uint64(1) << s4) - np.uint64(1))
        while j + 1 < k and not _after(starts_hi[j + 1], starts_lo[j + 1], bs_hi, bs_lo):
            j += 1
        r = j
        while r + 1 < k and not _after(starts_hi[r + 1], starts_lo[r + 1], be_hi, be_lo):
            r += 1
        if r == j:
            direct = np.uint32(0x80000000) | np.uint32(values[j] + 1)
            entries[first + b] = direct
            if shift < 64:
                # blocks before the one holding the next interval's start are inside j too
                stop = count
                if j + 1 < k and starts_hi[j + 1] == base_hi:
                    nxt = (starts_lo[j + 1] - base_lo) >> np.uint64(shift)
                    if nxt < np.uint64(count):
                        stop = np.int64(nxt)
                for z in range(b + 1, stop):
                    entries[first + z] = direct
                if stop > b + 1:
                    b = stop - 1
        elif r - j + 1 <= LEAF_MAX and shift <= leaf_shift:
            entries[first + b] = np.uint32(j) | (np.uint32(r - j) << np.uint32(27))
        else:
            if nwork == work.shape[0]:
                grown = np.empty((2 * nwork, 7), dtype=np.int64)
                _copy_rows(work, grown, nwork)
                work = grown
            entries[first + b] = np.uint32(0x40000000) | np.uint32(nwork)
            work[nwork, 0] = j
            work[nwork, 1] = shift - STRIDE
            work[nwork, 2] = np.int64(bs_hi >> np.uint64(1))
            work[nwork, 3] = np.int64(bs_hi & np.uint64(1))
            work[nwork, 4] = np.int64(bs_lo >> np.uint64(1))
            work[nwork, 5] = np.int64(bs_lo & np.uint64(1))
            work[nwork, 6] = leaf_shift
            nwork += 1
        j = r
    return nwork, work


@numba.njit(nogil=True, cache=True)
def _build(starts_hi, starts_lo, values, bits6, root6, bits4, root4):  # pragma: no cover - compiled
    """Fill the IPv6 root (2^bits6 entries) and the IPv4 root (2^bits4); return (heads, runs),
    the nodes, each compressed (see :func:`_compress_node`) as soon as it is filled."""
    # every int argument of _fill an int64 variable, never a literal: numba compiles a
    # function once per distinct argument types, and Literal[int](0) is a type of its own
    zero_i = np.int64(0)
    n6 = np.int64(1 << bits6)
    n4 = np.int64(1 << bits4)
    work = np.empty((4096, 7), dtype=np.int64)
    nwork, work = _fill(
        starts_hi, starts_lo, values, root6, zero_i, n6, np.uint64(0), np.uint64(0),
        np.int64(128 - bits6), zero_i, work, zero_i, np.int64(LEAF_SHIFT_MAX),
    )  # fmt: skip
    # IPv4: /bits4 blocks of ::ffff:0:0/96, from the interval holding ::ffff:0.0.0.0
    base_lo = np.uint64(0xFFFF00000000)
    j = zero_i
    zero = np.uint64(0)
    while j + 1 < starts_hi.size and not _after(starts_hi[j + 1], starts_lo[j + 1], zero, base_lo):
        j += 1
    nwork, work = _fill(
        starts_hi, starts_lo, values, root4, zero_i, n4, np.uint64(0), base_lo,
        np.int64(32 - bits4), j, work, nwork, np.int64(V4_LEAF_SHIFT_MAX),
    )  # fmt: skip
    # nodes in the order they were numbered; each one's children are numbered after it
    heads = np.zeros(8 * max(nwork, 1), np.uint64)
    runs = np.empty(256 * max(nwork, 1), np.uint32)
    node = np.empty(256, np.uint32)
    m = 0
    q = 0
    while q < nwork:
        b_hi = (np.uint64(work[q, 2]) << np.uint64(1)) | np.uint64(work[q, 3])
        b_lo = (np.uint64(work[q, 4]) << np.uint64(1)) | np.uint64(work[q, 5])
        nwork, work = _fill(
            starts_hi, starts_lo, values, node, zero_i, np.int64(256), b_hi, b_lo, work[q, 1],
            work[q, 0], work, nwork, work[q, 6],
        )  # fmt: skip
        if 8 * (q + 1) > heads.size:
            grown_h = np.zeros(2 * heads.size, np.uint64)
            for i in range(heads.size):  # loops, not slices: see _copy_rows
                grown_h[i] = heads[i]
            heads = grown_h
        if m + 256 > runs.size:
            grown_r = np.empty(2 * runs.size, np.uint32)
            for i in range(m):
                grown_r[i] = runs[i]
            runs = grown_r
        m = _compress_node(node, heads, 8 * q, runs, m)
        q += 1
    return heads[: 8 * nwork], runs[:m]


@numba.njit(cache=True)
def _copy_rows(src, dst, n):  # pragma: no cover - compiled
    """``dst[:n] = src[:n]`` as a loop: a slice assignment makes numba compile its shape-check
    error message (string formatting, seconds of compile time on a cold start)."""
    for i in range(n):
        for c in range(src.shape[1]):
            dst[i, c] = src[i, c]


@numba.njit(cache=True, inline="always")
def _compress_node(node, heads, h, runs, m):  # pragma: no cover - compiled
    """Store a node's 256 entries as runs of equal ones, kept once each from ``runs[m]``.

    Its head (8 uint64 from ``heads[h]``) is a bitmap per 64-entry quarter marking the entries
    that start a run, then for each quarter the index in ``runs`` of its first run (minus one
    if the quarter starts inside a run). A full routing table's 16 M node entries are 1.5 M
    runs. Returns the new end of ``runs``.
    """
    for q in range(4):
        heads[h + 4 + q] = m
        word = np.uint64(0)
        for b in range(64):
            i = 64 * q + b
            if i == 0 or node[i] != node[i - 1]:
                word |= np.uint64(1) << np.uint64(b)
                runs[m] = node[i]
                m += 1
        heads[h + q] = word
    return m


@numba.njit(cache=True, inline="always")
def _popcount(x):  # pragma: no cover - compiled
    """Set bits of a uint64 (bit-parallel, as in the lookup body)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(cache=True, inline="always")
def _one_other(heads, runs, n):  # pragma: no cover - compiled
    """(byte, entry, rest) if all entries of node n but the one at ``byte`` equal ``rest``, a
    direct entry; else (-1, 0, 0). Read from the node's runs: two or three of them."""
    h = 8 * n
    count = (
        _popcount(heads[h]) + _popcount(heads[h + 1]) + _popcount(heads[h + 2])
        + _popcount(heads[h + 3])
    )  # fmt: skip
    if count != 2 and count != 3:
        return -1, np.uint32(0), np.uint32(0)
    first = np.int64(heads[h + 4])
    # where the second and third runs start (the first starts at entry 0)
    second = -1
    third = -1
    for q in range(4):
        word = heads[h + q]
        if q == 0:
            word &= ~np.uint64(1)
        while word:
            low = word & (~word + np.uint64(1))
            b = 64 * q + _popcount(low - np.uint64(1))  # the lowest set bit's position
            if second < 0:
                second = b
            elif third < 0:
                third = b
            word ^= low
    a = runs[first]
    c = runs[first + 1]
    if count == 2:
        if second == 1 and c >= np.uint32(0x80000000):
            return 0, a, c
        if second == 255 and a >= np.uint32(0x80000000):
            return 255, c, a
    elif a == runs[first + 2] and third == second + 1 and a >= np.uint32(0x80000000):
        return second, c, a
    return -1, np.uint32(0), np.uint32(0)


@numba.njit(nogil=True, cache=True)
def _skip_chains(root6, heads, runs, top_shift, min_bits):  # pragma: no cover - compiled
    """Replace the chains of one-path nodes under IPv6 root entries by skips, in place;
    returns how many.

    A node whose 256 entries are all one direct entry ``rest`` but one (at ``byte``) lets
    one path through; a chain of such nodes with the same ``rest`` (a network's local
    prefixes, 2620:a0::/44 under the 2620::/16 root entry: three nodes) is one compare of
    the address's next 8-56 bits instead of a node walk each. The chain's first node's head
    becomes the skip (words: the path's bits, their count k, a mask of k ones, the entry at
    the chain's end | ``rest`` << 32) and the root entry naming the node a skip entry: its
    number, bits 27-31 clear, a tag no leaf has (leaves hold two or more intervals). The
    chain's other nodes stay, unused, so no node is renumbered. Only chains of at least
    ``min_bits`` bits, within the address's top 64 bits (the lookup compares one word), from
    nodes numbered below 2^27, and under root entries only: one skip at most per lookup, so
    the lookup body gains one branch in its IPv6 path and none in its node loop (a skip
    check in the loop made the fused records kernel 1.4 ns a lookup slower on IPv4 records).
    ``top_shift``: the address bits below a root entry's block.
    """
    made = 0
    for i in range(root6.size):
        e = root6[i]
        n = np.int64(e & np.uint32(0x3FFFFFFF))
        k = 0
        key = np.uint64(0)
        rest = np.uint32(0)
        end = e
        while (end & np.uint32(0xC0000000)) == np.uint32(0x40000000):
            if k + 8 > SKIP_MAX_BITS or top_shift - k - 8 < 64:
                break
            byte, other, r = _one_other(heads, runs, np.int64(end & np.uint32(0x3FFFFFFF)))
            if byte < 0 or (k > 0 and r != rest):
                break
            rest = r
            key = (key << np.uint64(8)) | np.uint64(byte)
            k += 8
            end = other
        if k >= min_bits and k > 0 and n < (1 << LEAF_J_BITS):
            h = 8 * n
            heads[h] = key
            heads[h + 1] = np.uint64(k)
            heads[h + 2] = (np.uint64(1) << np.uint64(k)) - np.uint64(1)
            heads[h + 3] = np.uint64(end) | (np.uint64(rest) << np.uint64(32))
            root6[i] = np.uint32(n)
            made += 1
    return made


@numba.njit(nogil=True, cache=True)
def _fill_runs(starts, entries, out):  # pragma: no cover - compiled
    """``out[starts[r]:starts[r + 1]] = entries[r]`` for every run r (the last to the end)."""
    n = starts.size
    for r in range(n):
        stop = np.int64(starts[r + 1]) if r + 1 < n else out.size
        e = entries[r]
        for i in range(np.int64(starts[r]), stop):
            out[i] = e


def expand_runs(starts: np.ndarray, entries: np.ndarray, size: int) -> np.ndarray:
    """A root index (``size`` uint32 entries) from its runs of equal entries: where each run
    starts (ascending, the first at 0) and its entry. NumPy-allocated, so huge pages back it;
    a loop, since ``np.repeat`` measured 10x slower on a big table's 1.4 M short runs."""
    starts = np.ascontiguousarray(starts, dtype=np.uint32)
    entries = np.ascontiguousarray(entries, dtype=np.uint32)
    if (
        starts.size != entries.size
        or starts.size == 0
        or starts[0] != 0
        or int(starts[-1]) >= size
        or not (starts[1:] > starts[:-1]).all()
    ):
        raise ValueError("root index runs out of order")
    out = index_empty(size, np.uint32)
    _fill_runs(starts, entries, out)
    return out


#: madvise(2)'s advice for transparent huge pages, and their size (Linux, x86-64 and arm64)
_MADV_HUGEPAGE = 14
_HUGE_PAGE = 2 << 20


@functools.cache
def _madvise():  # pragma: no cover - depends on the C library
    """The C library's ``madvise``, or None (not Linux, or no glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        f = ctypes.CDLL("libc.so.6", use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    f.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    f.restype = ctypes.c_int
    return f


def index_empty(shape: int | tuple[int, ...], dtype: type) -> np.ndarray:
    """``np.empty`` for a lookup index's array, its whole 2 MiB pages advised for transparent
    huge pages before it is first filled. A 64 MiB root on 4 KiB pages misses the TLB on
    nearly every lookup (lookups 4x slower, measured), and a small build turns NumPy's own
    advice off for its other arrays
    (:func:`flowatlas.engine.allocator.choose_pages`): the index's pages are all touched
    anyway, so whole 2 MiB pages cost it nothing more. Advice refused leaves 4 KiB pages."""
    a = np.empty(shape, dtype)
    madvise = _madvise() if a.nbytes >= 2 * _HUGE_PAGE else None
    if madvise is not None:
        start = -(-a.ctypes.data // _HUGE_PAGE) * _HUGE_PAGE
        end = (a.ctypes.data + a.nbytes) // _HUGE_PAGE * _HUGE_PAGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)
    return a


def _numpy_copy(a: np.ndarray) -> np.ndarray:
    """A NumPy-allocated copy, advised for huge pages where big (:func:`index_empty`)."""
    out = index_empty(a.shape, a.dtype)
    out[...] = a
    return out


def ipv4_intervals(starts_hi: np.ndarray, starts_lo: np.ndarray) -> int:
    """How many intervals of a step function start inside ``::ffff:0:0/96`` (sorted starts)."""
    hi = np.asarray(starts_hi, dtype=np.uint64)
    lo = np.asarray(starts_lo, dtype=np.uint64)
    # the starts are sorted: those in ::ffff:0:0/96 are one slice, found by bisection
    key = (hi == 0) & ((lo >> np.uint64(32)) <= np.uint64(0xFFFF))
    end = int(np.searchsorted(~key, True))  # key holds on a prefix of the starts
    first = int(np.searchsorted(lo[:end], np.uint64(0xFFFF_0000_0000)))
    return end - first


def default_bits4(starts_hi: np.ndarray, starts_lo: np.ndarray) -> int:
    """IPv4 root size for a step function: 2^24 entries (/24 blocks, 64 MiB) for tables with
    many IPv4 intervals, 2^16 (/16 blocks, 256 KiB) for up to :data:`SMALL_V4_INTERVALS`."""
    return V4_SMALL_BITS if ipv4_intervals(starts_hi, starts_lo) <= SMALL_V4_INTERVALS else 24


def build_index(
    starts_hi: np.ndarray,
    starts_lo: np.ndarray,
    values: np.ndarray,
    bits6: int = 16,
    bits4: int | None = None,
) -> LpmArrays:
    """Build the lookup arrays for a step function (starts sorted ascending, first = ::);
    ``bits4`` (16 or 24) the IPv4 root's, by default :func:`default_bits4`."""
    starts_hi = _numpy_copy(np.ascontiguousarray(starts_hi, dtype=np.uint64))
    starts_lo = _numpy_copy(np.ascontiguousarray(starts_lo, dtype=np.uint64))
    values = _numpy_copy(np.ascontiguousarray(values, dtype=np.int32))
    if starts_hi.size == 0 or starts_hi[0] != 0 or starts_lo[0] != 0:
        raise ValueError("a step function must start at address ::")
    if bits6 not in (8, 16, 24):
        raise ValueError("bits6 must be 8, 16 or 24 (nodes split 8 bits at a time)")
    if bits4 is None:
        bits4 = default_bits4(starts_hi, starts_lo)
    if bits4 not in V4_BITS:
        raise ValueError("bits4 must be 8, 16 or 24 (nodes split 8 bits at a time)")
    if starts_hi.size >= 1 << LEAF_J_BITS:
        raise ValueError(f"too many intervals for {LEAF_J_BITS}-bit leaf offsets")
    if values.size and int(values.max()) >= 0x7FFF_FFFF:
        raise ValueError("network ids must be below 2^31 - 1")
    # the roots allocated by NumPy and filled in place (no copy of a 64 MiB IPv4 root)
    root6 = index_empty(1 << bits6, np.uint32)
    root4 = index_empty(1 << bits4, np.uint32)
    heads, runs = _build(starts_hi, starts_lo, values, bits6, root6, bits4, root4)
    if heads.size // 8 >= 0x4000_0000:
        raise ValueError("too many index nodes")
    if heads.size == 0:  # no node: one unused one, so no array is empty (device copies)
        heads, runs = np.zeros(8, np.uint64), np.zeros(1, np.uint32)
    index = LpmArrays(
        starts_hi, starts_lo, values, root4, root6, _aligned(heads), _numpy_copy(runs),
        np.uint64(64 - bits6), np.uint64(32 - bits4),
    )  # fmt: skip
    skip_chains(index)
    return index


def skip_chains(index: LpmArrays, min_bits: int = SKIP_MIN_BITS) -> int:
    """Turn the index's chains of one-path IPv6 nodes into skips, in place (see
    :func:`_skip_chains`); returns how many. :func:`build_index` does it; an index stored by a
    flowatlas before skips (a version 2 ``.fatable``) gets it when loaded. An index that has
    skips already has no such chain left, so a second call changes nothing."""
    if index.heads.size < 8 or index.idx6.size == 0:
        return 0
    return int(
        _skip_chains(index.idx6, index.heads, index.runs, np.int64(index.shift6) + 64, min_bits)
    )


def _aligned(a: np.ndarray) -> np.ndarray:
    """A copy starting on a 64-byte boundary, so each 64-byte node head is one cache line."""
    buf = index_empty(a.size + 64 // a.itemsize, a.dtype)
    skip = (-buf.ctypes.data % 64) // a.itemsize
    out = buf[skip : skip + a.size]
    out[...] = a
    return out
