"""The disk shuffle's rows, narrowed: what a map task writes for the reducers to read back.

A map task's (cell, remote address, volume) rows took 32 bytes each on disk (four uint64
columns): 24.5 GiB at 10^9 records, written, cached, read back and removed. Many of those
bytes are zeros: a task's cell keys span about 20 bits (one day's buckets), two thirds of
the addresses are IPv4 (``::ffff:a.b.c.d``, all but 32 bits known), volumes need about 40
bits. :func:`encode_rows` writes each IP partition's rows as one block, rows in the same
order, as sections of little-endian integers, each section padded to a multiple of 8 bytes:

1. the cell keys as offsets from the task's smallest key: uint32, or uint64 where the
   task's keys span 2^32 or more (``cell_bytes`` 4 or 8);
2. the volumes' low 32 bits (uint32);
3. their high 32 bits where a task's volumes need them: uint16 where all fit 48 bits,
   uint32 else (``high_bytes`` 0, 2 or 4);
4. the addresses' low 32 bits (uint32);
5. one bit a row (least significant first), set where the address is not IPv4-mapped;
6. for those rows only (``n6`` of them), the address's low word's high 32 bits (uint32);
7. and its high word (uint64).

Sections 6 and 7 hold one slot more than their rows (zeros): the loops that write and read
them are free of branches (every row writes or reads the next slot, an IPv6 one keeps it),
which cost a mispredicted branch on about a third of the rows.

About 18 bytes a row on the synthetic archives. :func:`decode_blocks` gives back exactly
the rows that were encoded, in their order; the widths are the task's, so every block of a
task has the same ones.
"""

from __future__ import annotations

import numba
import numpy as np

from flowatlas import kernel_cache

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

_V4_HIGH = np.uint64(0xFFFF)
_LOW32 = np.uint64(0xFFFF_FFFF)
_U32 = np.uint64(32)


@numba.njit(inline="always", nogil=True, cache=True)
def _pad(n):  # pragma: no cover - compiled
    return (n + 7) & ~7


@numba.njit(inline="always", nogil=True, cache=True)
def _layout(m, n6, wc, wh):  # pragma: no cover - compiled
    """Byte offsets of a block's sections 2-7 and its end, from its start. Sections 6 and
    7 hold one spare slot, which the branch-free loops write and read for IPv4 rows."""
    s2 = _pad(m * wc)
    s3 = s2 + _pad(4 * m)
    s4 = s3 + _pad(wh * m)
    s5 = s4 + _pad(4 * m)
    s6 = s5 + _pad((m + 7) // 8)
    s7 = s6 + _pad(4 * (n6 + 1))
    return s2, s3, s4, s5, s6, s7, s7 + 8 * (n6 + 1)


@numba.njit(inline="always", nogil=True, cache=True)
def _sections(blk, m, n6, wc, wh):  # pragma: no cover - compiled
    """Typed views of a block's sections (:func:`_layout`); those its widths leave out,
    and the cell keys' view of the other width, empty."""
    s2, s3, s4, s5, s6, s7, end = _layout(m, n6, wc, wh)
    return (
        blk[: s2 if wc == 4 else 0].view(np.uint32),
        blk[: s2 if wc == 8 else 0].view(np.uint64),
        blk[s2:s3].view(np.uint32),
        blk[s3 : s4 if wh == 2 else s3].view(np.uint16),
        blk[s3 : s4 if wh == 4 else s3].view(np.uint32),
        blk[s4:s5].view(np.uint32),
        blk[s5:s6],
        blk[s6:s7].view(np.uint32),
        blk[s7:end].view(np.uint64),
    )


@numba.njit(nogil=True, cache=True)
def _encode(cell, hi, lo, vol, bounds, out, nb, n6s, base, wc, wh):  # pragma: no cover
    parts = bounds.size - 1
    ub = np.uint64(base)
    for j in range(parts):
        a, b = bounds[j], bounds[j + 1]
        m = b - a
        if m == 0:
            continue
        p = nb[j]
        n6 = n6s[j]
        s2, s3, s4, s5, s6, s7, end = _layout(m, n6, wc, wh)
        blk = out[p : p + end]
        for q in (s2, s3, s4, s5, s6, s7, end):  # each section's padding, and the flags
            blk[q - 8 : q] = 0
        blk[s5:s6] = 0
        c32, c64, vl, vh16, vh32, ll, flags, lh, h6 = _sections(blk, m, n6, wc, wh)
        k = 0
        for i in range(m):
            c = np.uint64(cell[a + i]) - ub
            v = vol[a + i]
            h, lw = hi[a + i], lo[a + i]
            if wc == 4:
                c32[i] = np.uint32(c)
            else:
                c64[i] = c
            vl[i] = np.uint32(v & _LOW32)
            if wh == 2:
                vh16[i] = np.uint16(v >> _U32)
            elif wh == 4:
                vh32[i] = np.uint32(v >> _U32)
            ll[i] = np.uint32(lw & _LOW32)
            # branch-free: every row writes slot k, an IPv6 one keeps it
            six = np.int64(h != np.uint64(0)) | np.int64((lw >> _U32) != _V4_HIGH)
            flags[i >> 3] |= np.uint8(six << (i & 7))
            lh[k] = np.uint32(lw >> _U32)
            h6[k] = h
            k += six
        lh[k] = 0  # the spare slot, as the last IPv4 row left it: zeros in the file
        h6[k] = 0


@numba.njit(nogil=True, cache=True)
def _measure(cell, hi, lo, vol, bounds):  # pragma: no cover - compiled
    """(smallest cell key, cell span, largest volume, IPv6 rows of each partition)."""
    n = cell.size
    parts = bounds.size - 1
    cmin = cell[0] if n else np.int64(0)
    cmax = cmin
    vmax = np.uint64(0)
    for i in range(n):
        c = cell[i]
        cmin = min(cmin, c)
        cmax = max(cmax, c)
        vmax = max(vmax, vol[i])
    n6s = np.zeros(parts, np.int64)
    for j in range(parts):
        k = 0
        for i in range(bounds[j], bounds[j + 1]):
            if hi[i] != np.uint64(0) or (lo[i] >> _U32) != _V4_HIGH:
                k += 1
        n6s[j] = k
    return cmin, np.uint64(cmax) - np.uint64(cmin), vmax, n6s


@numba.njit(nogil=True, cache=True)
def _block_bounds(bounds, n6s, wc, wh):  # pragma: no cover - compiled
    parts = bounds.size - 1
    nb = np.zeros(parts + 1, np.int64)
    for j in range(parts):
        m = bounds[j + 1] - bounds[j]
        nb[j + 1] = nb[j] + (_layout(m, n6s[j], wc, wh)[6] if m else 0)
    return nb


def encode_rows(
    cell: np.ndarray, hi: np.ndarray, lo: np.ndarray, vol: np.ndarray, bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int]]:
    """A task's partition-ordered rows (partition j is ``bounds[j]:bounds[j + 1]``) as
    blocks (the module docstring's layout).

    Returns ``(bytes, block_bounds, n6, (cell_base, cell_bytes, high_bytes))``: the uint8
    blocks one after another, partition j's at ``block_bounds[j]:block_bounds[j + 1]``
    (int64, P + 1), each block's IPv6 rows (int64, P), and the task's widths, which
    :func:`decode_blocks` needs besides.
    """
    cell = np.ascontiguousarray(cell, np.int64)
    hi, lo, vol = (np.ascontiguousarray(x, np.uint64) for x in (hi, lo, vol))
    bounds = np.ascontiguousarray(bounds, np.int64)
    base, span, vmax, n6s = _measure(cell, hi, lo, vol, bounds)
    wc = 4 if span < 1 << 32 else 8
    wh = 0 if vmax < 1 << 32 else 2 if vmax < 1 << 48 else 4
    nb = _block_bounds(bounds, n6s, wc, wh)
    out = np.empty(int(nb[-1]), np.uint8)
    _encode(cell, hi, lo, vol, bounds, out, nb, n6s, np.int64(base), wc, wh)
    return out, nb, n6s, (int(base), wc, wh)


@numba.njit(nogil=True, cache=True)
def _decode(buf, starts, rows, n6s, bases, wcs, whs, cell, hi, lo, vol):  # pragma: no cover
    at = 0
    for t in range(rows.size):
        m = rows[t]
        n6 = n6s[t]
        wc, wh = wcs[t], whs[t]
        if m < 0 or n6 < 0 or n6 > m or (wc != 4 and wc != 8) or (wh != 0 and wh != 2 and wh != 4):
            return False
        if m == 0:
            if starts[t + 1] != starts[t]:
                return False
            continue
        end = _layout(m, n6, wc, wh)[6]
        p = starts[t]
        if starts[t + 1] - p != end:
            return False
        blk = buf[p : p + end]
        ub = np.uint64(bases[t])
        c32, c64, vl, vh16, vh32, ll, flags, lh, h6 = _sections(blk, m, n6, wc, wh)
        k = 0
        for i in range(m):
            if wc == 4:
                cell[at + i] = np.int64(np.uint64(c32[i]) + ub)
            else:
                cell[at + i] = np.int64(c64[i] + ub)
            v = np.uint64(vl[i])
            if wh == 2:
                v |= np.uint64(vh16[i]) << _U32
            elif wh == 4:
                v |= np.uint64(vh32[i]) << _U32
            vol[at + i] = v
            # branch-free: an IPv4 row reads the spare slot k and masks it out
            six = np.int64((flags[i >> 3] >> (i & 7)) & 1)
            keep = np.uint64(0) - np.uint64(six)
            hi[at + i] = h6[k] & keep
            lo[at + i] = ((np.uint64(lh[k]) & keep) | (_V4_HIGH & ~keep)) << _U32 | np.uint64(ll[i])
            k += six
            if k > n6:
                return False
        if k != n6:
            return False
        at += m
    return True


def decode_blocks(
    buf: np.ndarray,
    starts: np.ndarray,
    rows: np.ndarray,
    n6: np.ndarray,
    widths: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows of blocks laid one after another in ``buf`` (uint8; block t at
    ``starts[t]:starts[t + 1]``, multiples of 8 from an 8-byte-aligned start, with
    ``rows[t]`` rows of which ``n6[t]`` IPv6, encoded with the widths ``widths[t]`` =
    (cell base, cell bytes, high bytes)), joined in block order: ``(cell, hi, lo, vol)``,
    int64 then uint64.

    Raises :class:`ValueError` where a block does not fit its rows and widths (a damaged
    file).
    """
    rows = np.ascontiguousarray(rows, np.int64)
    n = int(rows.sum())
    cell = np.empty(n, np.int64)
    hi, lo, vol = (np.empty(n, np.uint64) for _ in range(3))
    widths = np.asarray(widths, np.int64).reshape(-1, 3)
    ok = _decode(
        buf, np.ascontiguousarray(starts, np.int64), rows, np.ascontiguousarray(n6, np.int64),
        np.ascontiguousarray(widths[:, 0]), np.ascontiguousarray(widths[:, 1]),
        np.ascontiguousarray(widths[:, 2]), cell, hi, lo, vol,
    )  # fmt: skip
    if not ok:
        raise ValueError("a shuffle block does not match its rows and widths")
    return cell, hi, lo, vol
