"""Compile classification sources into one immutable prefix table.

Each address source becomes a :class:`Layer`: address ranges (prefixes are ranges too) with
attributes (network type, ASN, organisation, country, metro). Each ASN source becomes an
:class:`AsnTable`: ASNs with a network type and/or an organisation name. Compiling does, on the
host, once:

1. within a layer, the most specific range wins (nested prefixes resolved by a sweep);
2. across layers, for each attribute, the first layer in precedence order that has a value
   at an address provides it (so a cloud list can give the type while the routing table gives
   the ASN);
3. the network type follows the precedence written down in docs/classification.md:
   user prefix overrides > user ASN overrides > explicit prefix lists > ASN -> type > Unknown
   (exporter/interface rules sit between user overrides and prefix lists; the engine applies
   them per flow, see :meth:`PrefixTable.user_override_mask`);
4. identical attribute tuples from the same winning row become one network id, and the
   result is a step function over the 128-bit space: sorted starts with a network id each.

The output is deterministic: the same layers give the same arrays, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowatlas import kernel_cache
from flowatlas.errors import InputError

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

ATTRIBUTES = ("network_type", "asn", "org", "country", "metro")
STRING_ATTRIBUTES = ("network_type", "org", "country", "metro")

#: layer tiers; "override" layers are the user's and beat everything (see module docstring)
LAYER_TIERS = ("override", "prefix", "routing", "geo")
#: how a network's type was decided, best first (stored per network as ``tier``)
TYPE_TIERS = ("override", "override-asn", "prefix", "asn", "none")


@dataclass
class Layer:
    """One source's rows: inclusive ranges [start, end] over 128 bits, with attributes.

    ``attrs`` has one row per range and any of the columns network_type (string), asn
    (uint32, 0 = none), org, country, metro (strings); nulls mean "this source does not say".
    ``provenance`` (name, path, sha256, date, rows ...) is copied into every table and cube.
    ``tier`` is one of :data:`LAYER_TIERS`; ``lines`` (optional) gives each row's line in its
    file, for messages.
    """

    name: str
    start_hi: np.ndarray
    start_lo: np.ndarray
    end_hi: np.ndarray
    end_lo: np.ndarray
    attrs: pa.Table
    provenance: dict[str, Any] = field(default_factory=dict)
    tier: str = "prefix"
    lines: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.start_hi)
        for a in (self.start_lo, self.end_hi, self.end_lo):
            if len(a) != n:
                raise ValueError(f"layer {self.name}: range arrays differ in length")
        if self.attrs.num_rows != n:
            raise ValueError(
                f"layer {self.name}: {self.attrs.num_rows} attribute rows for {n} ranges"
            )
        unknown = set(self.attrs.column_names) - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"layer {self.name}: unknown attribute columns {sorted(unknown)}")
        if self.tier not in LAYER_TIERS:
            raise ValueError(f"layer {self.name}: unknown tier {self.tier!r} (use {LAYER_TIERS})")
        bad = (self.end_hi < self.start_hi) | (
            (self.end_hi == self.start_hi) & (self.end_lo < self.start_lo)
        )
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"{self.where(r)}: range ends before it starts")

    def __len__(self) -> int:
        return len(self.start_hi)

    def where(self, row: int) -> str:
        """'file: line N' (or 'name: row N') for messages about one row."""
        origin = self.provenance.get("path") or self.name
        if self.lines is not None and 0 <= row < len(self.lines):
            return f"{origin}: line {int(self.lines[row])}"
        return f"{origin}: row {row + 1}"


@dataclass
class AsnTable:
    """One ASN source: ASNs with a network type and/or organisation (nulls: not said).

    ``tier`` is "override" for the user's ASN rules (they beat prefix lists) or "asn".
    """

    name: str
    asns: np.ndarray
    attrs: pa.Table
    provenance: dict[str, Any] = field(default_factory=dict)
    tier: str = "asn"
    lines: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.asns = np.asarray(self.asns, dtype=np.uint32)
        if self.attrs.num_rows != self.asns.size:
            raise ValueError(f"ASN table {self.name}: attribute rows differ from ASNs")
        unknown = set(self.attrs.column_names) - {"network_type", "org"}
        if unknown:
            raise ValueError(f"ASN table {self.name}: unknown columns {sorted(unknown)}")
        if self.tier not in ("override", "asn"):
            raise ValueError(f"ASN table {self.name}: tier must be 'override' or 'asn'")

    def __len__(self) -> int:
        return int(self.asns.size)

    def where(self, row: int) -> str:
        origin = self.provenance.get("path") or self.name
        if self.lines is not None and 0 <= row < len(self.lines):
            return f"{origin}: line {int(self.lines[row])}"
        return f"{origin}: row {row + 1}"


@dataclass
class ResolveStats:
    """What resolving one layer found: duplicates (same range twice) and partial overlaps."""

    duplicates: int = 0
    overlaps: int = 0
    first_overlap: int = -1  # row index of the first partially overlapping range
    dup_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))


# --------------------------------------------------------------------------- sweep


@numba.njit(cache=True)
def _resolve(s_hi, s_lo, e_hi, e_lo, order):  # pragma: no cover - compiled
    """Most-specific-wins sweep over ranges visited in ``order`` (start asc, end desc, row asc).

    Returns (starts_hi, starts_lo, row, dup_pairs, n_dup, overlaps, first_overlap) where row is
    the winning range index from each start (-1 = none) and dup_pairs[:n_dup] holds
    (earlier, later) rows of identical ranges.
    """
    n = order.size
    out_hi = np.empty(2 * n + 1, dtype=np.uint64)
    out_lo = np.empty(2 * n + 1, dtype=np.uint64)
    out_v = np.empty(2 * n + 1, dtype=np.int32)
    dups = np.empty((n, 2), dtype=np.int64)
    out_hi[0] = 0
    out_lo[0] = 0
    out_v[0] = -1
    m = 1
    stack = np.empty(n + 1, dtype=np.int64)
    top = 0
    dup = 0
    ovl = 0
    first_ovl = -1
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    for oi in range(n):
        r = order[oi]
        rs_hi = s_hi[r]
        rs_lo = s_lo[r]
        # close ranges that end before r starts
        while top > 0:
            t = stack[top - 1]
            if e_hi[t] < rs_hi or (e_hi[t] == rs_hi and e_lo[t] < rs_lo):
                top -= 1
                nh = e_hi[t]
                nl = e_lo[t] + np.uint64(1)
                if nl == 0:
                    nh += np.uint64(1)
                v = stack[top - 1] if top > 0 else -1
                if out_hi[m - 1] == nh and out_lo[m - 1] == nl:
                    out_v[m - 1] = v
                else:
                    out_hi[m] = nh
                    out_lo[m] = nl
                    out_v[m] = v
                    m += 1
            else:
                break
        # partial overlaps: r starts inside t but ends after it; the later start wins
        while top > 0:
            t = stack[top - 1]
            if e_hi[t] < e_hi[r] or (e_hi[t] == e_hi[r] and e_lo[t] < e_lo[r]):
                ovl += 1
                if first_ovl < 0:
                    first_ovl = r
                top -= 1
            else:
                break
        if top > 0:
            t = stack[top - 1]
            if s_hi[t] == rs_hi and s_lo[t] == rs_lo and e_hi[t] == e_hi[r] and e_lo[t] == e_lo[r]:
                dups[dup, 0] = t
                dups[dup, 1] = r
                dup += 1
        if out_hi[m - 1] == rs_hi and out_lo[m - 1] == rs_lo:
            out_v[m - 1] = r
        else:
            out_hi[m] = rs_hi
            out_lo[m] = rs_lo
            out_v[m] = r
            m += 1
        stack[top] = r
        top += 1
    while top > 0:
        t = stack[top - 1]
        top -= 1
        if e_hi[t] == ones and e_lo[t] == ones:
            continue
        nh = e_hi[t]
        nl = e_lo[t] + np.uint64(1)
        if nl == 0:
            nh += np.uint64(1)
        v = stack[top - 1] if top > 0 else -1
        if out_hi[m - 1] == nh and out_lo[m - 1] == nl:
            out_v[m - 1] = v
        else:
            out_hi[m] = nh
            out_lo[m] = nl
            out_v[m] = v
            m += 1
    return out_hi[:m], out_lo[:m], out_v[:m], dups[:dup].copy(), dup, ovl, first_ovl


def resolve_layer(layer: Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray, ResolveStats]:
    """Step function (starts, winning row) of one layer: the most specific range wins.

    Identical ranges: the later row wins (counted as a duplicate). Partially overlapping
    ranges (possible in range files, impossible for prefixes): the later-starting range wins
    where they overlap (counted; callers decide whether that is an error).
    """
    n = len(layer)
    if n == 0:
        z = np.zeros(1, dtype=np.uint64)
        return z, z.copy(), np.full(1, -1, np.int32), ResolveStats()
    rows = np.arange(n, dtype=np.int64)
    order = np.lexsort((rows, ~layer.end_lo, ~layer.end_hi, layer.start_lo, layer.start_hi))
    s_hi, s_lo, v, pairs, dup, ovl, first = _resolve(
        np.ascontiguousarray(layer.start_hi, np.uint64),
        np.ascontiguousarray(layer.start_lo, np.uint64),
        np.ascontiguousarray(layer.end_hi, np.uint64),
        np.ascontiguousarray(layer.end_lo, np.uint64),
        order.astype(np.int64),
    )
    return s_hi, s_lo, v, ResolveStats(int(dup), int(ovl), int(first), pairs)


@numba.njit(cache=True)
def _sample(u_hi, u_lo, s_hi, s_lo, vals):  # pragma: no cover - compiled
    """Value of step function (s, vals) at each sorted point u (two-pointer merge)."""
    out = np.empty(u_hi.size, dtype=np.int32)
    j = 0
    k = s_hi.size
    for i in range(u_hi.size):
        while j + 1 < k and (
            s_hi[j + 1] < u_hi[i] or (s_hi[j + 1] == u_hi[i] and s_lo[j + 1] <= u_lo[i])
        ):
            j += 1
        out[i] = vals[j]
    return out


def _union_starts(steps: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    hi = np.concatenate([s[0] for s in steps])
    lo = np.concatenate([s[1] for s in steps])
    order = np.lexsort((lo, hi))
    hi, lo = hi[order], lo[order]
    keep = np.ones(hi.size, dtype=bool)
    keep[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    return hi[keep], lo[keep]


# --------------------------------------------------------------------------- range text


@numba.njit(cache=True)
def _cidr_lengths(s_hi, s_lo, e_hi, e_lo):  # pragma: no cover - compiled
    """Prefix length of each range that is exactly one CIDR block, else -1."""
    out = np.empty(s_hi.size, dtype=np.int16)
    for i in range(s_hi.size):
        x_hi = s_hi[i] ^ e_hi[i]
        x_lo = s_lo[i] ^ e_lo[i]
        ok = (s_hi[i] & x_hi) == 0 and (s_lo[i] & x_lo) == 0
        ok = ok and (e_hi[i] | x_hi) == e_hi[i] and (e_lo[i] | x_lo) == e_lo[i]
        bits = 0
        if x_hi != 0:
            ok = ok and x_lo == np.uint64(0xFFFFFFFFFFFFFFFF)
            ok = ok and (x_hi & (x_hi + np.uint64(1))) == 0
            v = x_hi
            while v:
                bits += 1
                v >>= np.uint64(1)
            bits += 64
        else:
            ok = ok and (x_lo & (x_lo + np.uint64(1))) == 0
            v = x_lo
            while v:
                bits += 1
                v >>= np.uint64(1)
        out[i] = 128 - bits if ok else -1
    return out


def range_text(s_hi: np.ndarray, s_lo: np.ndarray, e_hi: np.ndarray, e_lo: np.ndarray) -> pa.Array:
    """Ranges as text: 'a.b.c.d/n' or 'x::/n' when a range is one CIDR block, else 'a - b'."""
    from flowatlas.addresses import hilo_to_text, is_v4

    s_hi = np.ascontiguousarray(s_hi, np.uint64)
    s_lo = np.ascontiguousarray(s_lo, np.uint64)
    e_hi = np.ascontiguousarray(e_hi, np.uint64)
    e_lo = np.ascontiguousarray(e_lo, np.uint64)
    if s_hi.size == 0:
        return pa.array([], pa.string())
    lengths = _cidr_lengths(s_hi, s_lo, e_hi, e_lo).astype(np.int64)
    v4 = is_v4(s_hi, s_lo) & is_v4(e_hi, e_lo) & ((lengths < 0) | (lengths >= 96))
    lengths = np.where(v4 & (lengths >= 0), lengths - 96, lengths)
    first = hilo_to_text(s_hi, s_lo).cast(pa.string())
    last = hilo_to_text(e_hi, e_lo).cast(pa.string())
    cidr = pc.binary_join_element_wise(first, pa.array(lengths.astype(str)), "/")
    span = pc.binary_join_element_wise(first, last, " - ")
    return pc.if_else(pa.array(lengths >= 0), cidr, span)


# --------------------------------------------------------------------------- compile


@dataclass
class Compiled:
    """A compiled step function over network ids, the networks, and what compiling found."""

    starts_hi: np.ndarray
    starts_lo: np.ndarray
    values: np.ndarray
    networks: pa.Table
    stats: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)


def _string_codes(
    columns: Sequence[pa.Array | pa.ChunkedArray | None],
) -> tuple[list[np.ndarray | None], list[Any]]:
    """Dictionary-encode string columns over one shared, sorted dictionary (nulls -> -1)."""
    present = [c for c in columns if c is not None]
    if not present:
        return [None] * len(columns), []
    chunks = []
    for c in present:
        chunks.extend(c.chunks if isinstance(c, pa.ChunkedArray) else [c])
    pool = pc.unique(pa.chunked_array([c.cast(pa.string()) for c in chunks], pa.string()))
    pool = pool.drop_null()
    values = pc.array_sort_indices(pool)
    pool = pool.take(values)
    out: list[np.ndarray | None] = []
    for c in columns:
        if c is None:
            out.append(None)
            continue
        idx = pc.index_in(c.cast(pa.string()), value_set=pool)
        out.append(np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int32))
    return out, pool.to_pylist()


def _asn_codes(
    columns: Sequence[pa.Array | pa.ChunkedArray | None],
) -> tuple[list[np.ndarray | None], list[int]]:
    """Codes for ASN columns over one sorted dictionary (null and 0 -> -1)."""
    arrays = [
        None
        if c is None
        else np.asarray(pc.fill_null(c.cast(pa.uint32()), 0).to_numpy(), dtype=np.int64)
        for c in columns
    ]
    present = [a for a in arrays if a is not None and a.size]
    pool = np.unique(np.concatenate(present)) if present else np.zeros(0, np.int64)
    pool = pool[pool > 0]
    out: list[np.ndarray | None] = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        code = np.searchsorted(pool, a).astype(np.int32)
        code[a <= 0] = -1
        out.append(code)
    return out, pool.tolist()


def _merge_asn_tables(
    tables: Sequence[AsnTable], attr: str, tier: str | None
) -> tuple[np.ndarray, list[Any], np.ndarray, np.ndarray]:
    """ASN -> value over tables in order (first table that says wins).

    Returns (sorted asns, values, value per asn, table index per asn). ``tier`` restricts to
    tables of that tier (None: all).
    """
    asns, vals, which, rows = [], [], [], []
    for ti, t in enumerate(tables):
        if (tier is not None and t.tier != tier) or attr not in t.attrs.column_names:
            continue
        col = t.attrs.column(attr)
        valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if not valid.any():
            continue
        idx = np.flatnonzero(valid)
        asns.append(t.asns[idx].astype(np.int64))
        vals.append(col.take(pa.array(idx)).cast(pa.string()))
        which.append(np.full(idx.size, ti, np.int32))
        rows.append(idx)
    if not asns:
        return np.zeros(0, np.int64), [], np.zeros(0, np.int32), np.zeros(0, np.int32)
    a = np.concatenate(asns)
    w = np.concatenate(which)
    r = np.concatenate(rows)
    v = pa.chunked_array([c for chunk in vals for c in chunk.chunks], pa.string())
    order = np.lexsort((r, w, a))
    first = np.ones(order.size, dtype=bool)
    first[1:] = a[order][1:] != a[order][:-1]
    pick = order[first]
    return a[pick], v.take(pa.array(pick)).to_pylist(), w[pick], r[pick]


#: rows up to which :func:`_factorize` sorts (NumPy) instead of hashing (pandas): a
#: configuration's own few prefixes, compiled by every build, then need no pandas (its import
#: is 0.1 s of a build's start); large tables hash, several times faster than sorting
FACTORIZE_SORT_ROWS = 4096


def _factorize(columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ids (by first appearance) of distinct rows of int columns, and each id's first row."""
    if columns[0].size <= FACTORIZE_SORT_ROWS:
        return _factorize_sorting(columns)
    import pandas as pd

    codes = np.zeros(columns[0].size, dtype=np.int64)
    for col in columns:
        col_codes, uniq = pd.factorize(np.asarray(col, dtype=np.int64), sort=False)
        codes = pd.factorize(codes * (len(uniq) + 1) + col_codes, sort=False)[0]
    ids = codes.astype(np.int32)
    _, first_row = np.unique(ids, return_index=True)
    return ids, first_row


def _factorize_sorting(columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_factorize` by sorting (NumPy only): the same ids and first rows."""
    codes = np.zeros(columns[0].size, dtype=np.int64)
    for col in columns:
        uniq, col_codes = np.unique(np.asarray(col, dtype=np.int64), return_inverse=True)
        _, codes = np.unique(codes * (len(uniq) + 1) + col_codes, return_inverse=True)
    # the sorted order's ids, renumbered by each one's first row
    _, first, codes = np.unique(codes, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    ids = rank[codes].astype(np.int32)
    return ids, np.sort(first)


def _dup_conflicts(pairs: np.ndarray, codes: dict[str, np.ndarray | None]) -> tuple[int, int]:
    """How many identical-range pairs disagree on some attribute, and the first such row."""
    if pairs.size == 0:
        return 0, -1
    differ = np.zeros(pairs.shape[0], dtype=bool)
    for c in codes.values():
        if c is not None:
            differ |= c[pairs[:, 0]] != c[pairs[:, 1]]
    if not differ.any():
        return 0, -1
    later = pairs[differ, 1]
    return int(differ.sum()), int(later.min())


def compile_layers(
    layers: Sequence[Layer],
    *,
    asn_tables: Sequence[AsnTable] = (),
    asn_types: Mapping[int, str] | None = None,
    strict: bool = False,
    strict_overlaps: bool = False,
) -> Compiled:
    """Compile layers and ASN tables (each highest precedence first) into networks.

    ``asn_types`` is a shorthand for one more ASN table (ASN -> network type) after
    ``asn_tables``. Conflicts inside one source (the same range or ASN twice with different
    attributes; ranges that overlap without nesting) are counted in ``stats`` and described in
    ``warnings``; with ``strict`` the first is an error naming the file and line.
    ``strict_overlaps`` makes only partial overlaps an error.
    """
    asn_tables = list(asn_tables)
    if asn_types:
        keys = sorted(asn_types)
        asn_tables.append(
            AsnTable(
                "asn_types",
                np.array(keys, np.uint32),
                pa.table({"network_type": pa.array([asn_types[k] for k in keys], pa.string())}),
            )
        )
    stats: dict[str, dict[str, int]] = {}
    warnings: list[str] = []

    def problem(message: str, hard: bool) -> None:
        if hard:
            raise InputError(message)
        warnings.append(message)

    # ---- attribute codes per layer (one dictionary per attribute across all layers)
    per_attr_codes: dict[str, list[np.ndarray | None]] = {}
    attr_values: dict[str, list[Any]] = {}
    for attr in STRING_ATTRIBUTES:
        cols = [
            layer.attrs.column(attr) if attr in layer.attrs.column_names else None
            for layer in layers
        ]
        if attr == "network_type":
            cols += [
                t.attrs.column(attr) if attr in t.attrs.column_names else None for t in asn_tables
            ]
        if attr == "org":
            cols += [
                t.attrs.column(attr) if attr in t.attrs.column_names else None for t in asn_tables
            ]
        codes, values = _string_codes(cols)
        per_attr_codes[attr] = codes[: len(layers)]
        attr_values[attr] = values
    asn_codes, asn_values = _asn_codes(
        [
            layer.attrs.column("asn") if "asn" in layer.attrs.column_names else None
            for layer in layers
        ]
    )
    per_attr_codes["asn"] = asn_codes
    attr_values["asn"] = asn_values

    # ---- resolve each layer into a step function of rows
    steps = []
    for li, layer in enumerate(layers):
        s_hi, s_lo, rows, st = resolve_layer(layer)
        codes = {a: per_attr_codes[a][li] for a in ATTRIBUTES}
        n_conf, first_conf = _dup_conflicts(st.dup_pairs, codes)
        stats[layer.name] = {
            "rows": len(layer),
            "duplicates": st.duplicates,
            "conflicts": n_conf,
            "overlaps": st.overlaps,
        }
        if n_conf:
            problem(
                f"{layer.where(first_conf)}: the same range appears again with different "
                f"attributes ({n_conf} such entries in {layer.name}; the later entry wins)",
                strict,
            )
        if st.overlaps:
            problem(
                f"{layer.where(st.first_overlap)}: range overlaps another range without nesting "
                f"in it ({st.overlaps} such rows in {layer.name}; the later start wins)",
                strict or strict_overlaps,
            )
        steps.append((s_hi, s_lo, rows))

    for t in asn_tables:
        stats[t.name] = _asn_table_stats(t, problem, strict)

    if steps:
        u_hi, u_lo = _union_starts([(s[0], s[1]) for s in steps])
    else:
        u_hi, u_lo = np.zeros(1, np.uint64), np.zeros(1, np.uint64)
    n_u = u_hi.size
    row_at = [_sample(u_hi, u_lo, *s) for s in steps]

    def overlay(attr: str, which: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Code of attr from the first of layers ``which`` that has one; the layer and row."""
        code = np.full(n_u, -1, dtype=np.int32)
        from_layer = np.full(n_u, -1, dtype=np.int32)
        from_row = np.full(n_u, -1, dtype=np.int32)
        for li in which:
            col = per_attr_codes[attr][li]
            if col is None:
                continue
            rows = row_at[li]
            got = np.append(col, np.int32(-1))[rows]  # rows == -1 picks the trailing -1
            take = (code < 0) & (got >= 0)
            code[take] = got[take]
            from_layer[take] = li
            from_row[take] = rows[take]
        return code, from_layer, from_row

    everyone = list(range(len(layers)))
    asn_code, asn_layer, asn_row = overlay("asn", everyone)
    org_code, _, _ = overlay("org", everyone)
    country_code, _, _ = overlay("country", everyone)
    metro_code, _, _ = overlay("metro", everyone)

    # ---- network type, by precedence tier
    type_values = attr_values["network_type"]
    type_code = np.full(n_u, -1, dtype=np.int32)
    tier = np.full(n_u, TYPE_TIERS.index("none"), dtype=np.int32)
    # the source that decided the type: layer index, or -(table index + 2) for ASN tables
    decider = np.full(n_u, -1, dtype=np.int32)
    match_layer = np.full(n_u, -1, dtype=np.int32)
    match_row = np.full(n_u, -1, dtype=np.int32)
    asn_number = np.append(np.asarray(asn_values, dtype=np.int64), 0)[asn_code]

    def take_layers(which: list[int], tier_name: str) -> None:
        code, li, row = overlay("network_type", which)
        take = (type_code < 0) & (code >= 0)
        type_code[take] = code[take]
        tier[take] = TYPE_TIERS.index(tier_name)
        decider[take] = li[take]
        match_layer[take] = li[take]
        match_row[take] = row[take]

    def take_asn(tier_name: str, table_tier: str) -> None:
        asns, vals, table_idx, _ = _merge_asn_tables(asn_tables, "network_type", table_tier)
        if not asns.size:
            return
        pos = np.searchsorted(asns, asn_number)
        pos = np.minimum(pos, asns.size - 1)
        hit = (asns[pos] == asn_number) & (asn_number > 0) & (type_code < 0)
        type_index = {v: i for i, v in enumerate(type_values)}
        val_codes = np.asarray([type_index[v] for v in vals], dtype=np.int32)
        type_code[hit] = val_codes[pos[hit]]
        tier[hit] = TYPE_TIERS.index(tier_name)
        decider[hit] = -(table_idx[pos[hit]] + 2)

    overrides = [i for i, layer in enumerate(layers) if layer.tier == "override"]
    others = [i for i, layer in enumerate(layers) if layer.tier != "override"]
    take_layers(overrides, "override")
    take_asn("override-asn", "override")
    take_layers(others, "prefix")
    take_asn("asn", "asn")

    # org fallback: the ASN tables' names for the address's ASN
    asns, names, _, _ = _merge_asn_tables(asn_tables, "org", None)
    if asns.size:
        pos = np.minimum(np.searchsorted(asns, asn_number), asns.size - 1)
        hit = (asns[pos] == asn_number) & (asn_number > 0) & (org_code < 0)
        org_index = {v: i for i, v in enumerate(attr_values["org"])}
        name_codes = np.asarray([org_index.get(v, -1) for v in names], dtype=np.int32)
        org_code[hit] = name_codes[pos[hit]]

    # the row shown as "matched": the one that gave the type, else the one that gave the ASN,
    # else the first layer that covers the address at all
    fill = match_layer < 0
    match_layer[fill] = asn_layer[fill]
    match_row[fill] = asn_row[fill]
    for li in everyone:
        fill = match_layer < 0
        if not fill.any():
            break
        rows = row_at[li]
        has = fill & (rows >= 0)
        match_layer[has] = li
        match_row[has] = rows[has]

    # ---- networks: one per distinct attribute tuple and matched row
    nothing = match_layer < 0
    key = [type_code, asn_code, org_code, country_code, metro_code, tier, decider]
    key += [match_layer, match_row]
    ids, first_row = _factorize([k[~nothing] for k in key])
    net = np.full(n_u, -1, dtype=np.int32)
    net[~nothing] = ids
    keep = np.ones(n_u, dtype=bool)
    keep[1:] = net[1:] != net[:-1]
    starts_hi, starts_lo, values = u_hi[keep], u_lo[keep], net[keep]

    sel = np.flatnonzero(~nothing)[first_row]
    networks = _networks_table(
        layers,
        asn_tables,
        attr_values,
        sel,
        type_code,
        asn_code,
        org_code,
        country_code,
        metro_code,
        tier,
        decider,
        match_layer,
        match_row,
    )
    return Compiled(starts_hi, starts_lo, values, networks, stats, warnings)


def _asn_table_stats(
    t: AsnTable, problem: Callable[[str, bool], None], strict: bool
) -> dict[str, int]:
    """Duplicates and conflicts (same ASN, different attributes) inside one ASN table."""
    order = np.argsort(t.asns, kind="stable")
    a = t.asns[order]
    same = np.flatnonzero(a[1:] == a[:-1])
    dup = int(same.size)
    conflicts = 0
    first = -1
    if dup:
        differ = np.zeros(same.size, dtype=bool)
        for col in t.attrs.columns:
            vals = col.take(pa.array(order)).to_pylist()
            differ |= np.array([vals[i] != vals[i + 1] for i in same], dtype=bool)
        conflicts = int(differ.sum())
        if conflicts:
            first = int(order[same[differ] + 1].min())
            problem(
                f"{t.where(first)}: AS{int(t.asns[first])} appears again with different "
                f"attributes ({conflicts} such entries in {t.name}; the first entry wins)",
                strict,
            )
    return {"rows": len(t), "duplicates": dup, "conflicts": conflicts}


def _networks_table(
    layers,
    asn_tables,
    attr_values,
    sel,
    type_code,
    asn_code,
    org_code,
    country_code,
    metro_code,
    tier,
    decider,
    match_layer,
    match_row,
) -> pa.Table:
    """The networks table: one row per network id (rows ``sel`` of the per-interval arrays)."""

    def pick(attr: str, codes: np.ndarray) -> pa.Array:
        vals = pa.array(attr_values[attr], pa.string())
        return vals.take(pa.array(codes, pa.int32(), mask=codes < 0))

    ml = match_layer[sel]
    mr = match_row[sel]
    dec = decider[sel]
    layer_names = [layer.name for layer in layers]
    table_names = [t.name for t in asn_tables]
    n = sel.size

    # matched range text and line, gathered per layer
    s_hi = np.zeros(n, np.uint64)
    s_lo = np.zeros(n, np.uint64)
    e_hi = np.zeros(n, np.uint64)
    e_lo = np.zeros(n, np.uint64)
    line = np.zeros(n, np.int64)
    for li, layer in enumerate(layers):
        m = ml == li
        if not m.any():
            continue
        r = mr[m]
        s_hi[m] = layer.start_hi[r]
        s_lo[m] = layer.start_lo[r]
        e_hi[m] = layer.end_hi[r]
        e_lo[m] = layer.end_lo[r]
        line[m] = layer.lines[r] if layer.lines is not None else r + 1
    prefix = range_text(s_hi, s_lo, e_hi, e_lo)

    type_names = pick("network_type", type_code[sel]).fill_null("Unknown")
    asn_vals = np.append(np.asarray(attr_values["asn"], dtype=np.int64), 0)[asn_code[sel]]
    type_source = [
        layer_names[d] if d >= 0 else (table_names[-d - 2] if d <= -2 else None)
        for d in dec.tolist()
    ]
    return pa.table(
        {
            "network_type": type_names,
            "asn": pa.array(asn_vals.astype(np.uint32), pa.uint32()),
            "org": pick("org", org_code[sel]),
            "country": pick("country", country_code[sel]),
            "metro": pick("metro", metro_code[sel]),
            "tier": pa.array([TYPE_TIERS[t] for t in tier[sel].tolist()], pa.string()),
            "type_source": pa.array(type_source, pa.string()),
            "source": pa.array([layer_names[i] for i in ml.tolist()], pa.string()),
            "source_line": pa.array(line, pa.int64()),
            "prefix": prefix,
        }
    )
