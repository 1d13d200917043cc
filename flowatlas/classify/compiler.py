"""Compile classification sources into one immutable prefix table.

Each source becomes a :class:`Layer`: address ranges (prefixes are ranges too) with
attributes (network type, ASN, organisation, country). Compiling does, on the host, once:

1. within a layer, the most specific range wins (nested prefixes resolved by a sweep);
2. across layers, for each attribute, the first layer in precedence order that has a value
   at an address provides it (so a cloud list can give the type while the routing table gives
   the ASN);
3. where no layer gives a type, the ASN -> type mapping does; else the type is Unknown;
4. identical attribute tuples from the same winning row become one network id, and the
   result is a step function over the 128-bit space: sorted starts with a network id each.

The output is deterministic: the same layers give the same arrays, byte for byte.
Precedence is written down once, in docs/classification.md and DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from flowatlas.errors import InputError

ATTRIBUTES = ("network_type", "asn", "org", "country")


@dataclass
class Layer:
    """One source's rows: inclusive ranges [start, end] over 128 bits, with attributes.

    ``attrs`` has one row per range and any of the columns network_type (string), asn
    (uint32, 0 = none), org (string), country (string); nulls mean "this source does not say".
    ``provenance`` (name, path, sha256, date, rows ...) is copied into every table and cube.
    """

    name: str
    start_hi: np.ndarray
    start_lo: np.ndarray
    end_hi: np.ndarray
    end_lo: np.ndarray
    attrs: pa.Table
    provenance: dict[str, Any] = field(default_factory=dict)

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
        bad = (self.end_hi < self.start_hi) | (
            (self.end_hi == self.start_hi) & (self.end_lo < self.start_lo)
        )
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"{self.name}: row {r + 1}: range ends before it starts")

    def __len__(self) -> int:
        return len(self.start_hi)


@dataclass
class ResolveStats:
    """What resolving one layer found: duplicates (same range twice) and partial overlaps."""

    duplicates: int = 0
    overlaps: int = 0
    first_overlap: int = -1  # row index of the first partially overlapping range


# --------------------------------------------------------------------------- sweep


@numba.njit(cache=True)
def _resolve(s_hi, s_lo, e_hi, e_lo, order):  # pragma: no cover - compiled
    """Most-specific-wins sweep over ranges visited in ``order`` (start asc, end desc).

    Returns (starts_hi, starts_lo, row, n_out, duplicates, overlaps, first_overlap) where row
    is the winning range index from each start (-1 = none).
    """
    n = order.size
    out_hi = np.empty(2 * n + 1, dtype=np.uint64)
    out_lo = np.empty(2 * n + 1, dtype=np.uint64)
    out_v = np.empty(2 * n + 1, dtype=np.int32)
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
    return out_hi[:m], out_lo[:m], out_v[:m], dup, ovl, first_ovl


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
    s_hi, s_lo, v, dup, ovl, first = _resolve(
        np.ascontiguousarray(layer.start_hi, np.uint64),
        np.ascontiguousarray(layer.start_lo, np.uint64),
        np.ascontiguousarray(layer.end_hi, np.uint64),
        np.ascontiguousarray(layer.end_lo, np.uint64),
        order.astype(np.int64),
    )
    return s_hi, s_lo, v, ResolveStats(int(dup), int(ovl), int(first))


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


# --------------------------------------------------------------------------- compile


@dataclass
class Compiled:
    """A compiled step function over network ids, the networks, and what compiling found."""

    starts_hi: np.ndarray
    starts_lo: np.ndarray
    values: np.ndarray
    networks: pa.Table
    stats: dict[str, dict[str, int]]


def _codes(column: pa.ChunkedArray | pa.Array, null_code: int = -1) -> tuple[np.ndarray, list[Any]]:
    """Dictionary-encode a column: codes (int32, null -> null_code) and sorted unique values."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = sorted({v for v in arr.to_pylist() if v is not None})
    lookup = {v: i for i, v in enumerate(values)}
    codes = np.array(
        [lookup[v] if v is not None else null_code for v in arr.to_pylist()], dtype=np.int32
    )
    return codes, values


def compile_layers(
    layers: Sequence[Layer],
    *,
    asn_types: Mapping[int, str] | None = None,
    strict_overlaps: bool = False,
) -> Compiled:
    """Compile layers (highest precedence first) into a step function of network ids.

    ``asn_types`` maps an ASN to a network type for addresses no layer gives a type to.
    With ``strict_overlaps`` a partial overlap inside one layer is an error naming the layer
    and row; otherwise it is counted in ``stats``.
    """
    steps = []
    stats: dict[str, dict[str, int]] = {}
    for layer in layers:
        s_hi, s_lo, rows, st = resolve_layer(layer)
        if strict_overlaps and st.overlaps:
            raise InputError(
                f"{layer.name}: row {st.first_overlap + 1}: range overlaps another range "
                f"without nesting in it ({st.overlaps} such rows)"
            )
        stats[layer.name] = {
            "rows": len(layer),
            "duplicates": st.duplicates,
            "overlaps": st.overlaps,
        }
        steps.append((s_hi, s_lo, rows))

    if not steps:
        u_hi = np.zeros(1, np.uint64)
        u_lo = np.zeros(1, np.uint64)
    else:
        u_hi, u_lo = _union_starts([(s[0], s[1]) for s in steps])
    n_u = u_hi.size
    row_at = (
        np.stack([_sample(u_hi, u_lo, *s) for s in steps], axis=1)
        if steps
        else np.full((n_u, 0), -1, np.int32)
    )

    # per attribute: code of the value from the first layer that has one at each start
    attr_codes: dict[str, np.ndarray] = {}
    attr_values: dict[str, list[Any]] = {}
    winner_layer = np.full(n_u, -1, dtype=np.int32)
    winner_row = np.full(n_u, -1, dtype=np.int32)
    for attr in ATTRIBUTES:
        # a shared dictionary for this attribute over all layers
        per_layer = []
        pool: set[Any] = set()
        for layer in layers:
            if attr in layer.attrs.column_names:
                col = layer.attrs.column(attr).to_pylist()
                if attr == "asn":
                    col = [None if (v is None or v == 0) else int(v) for v in col]
                per_layer.append(col)
                pool.update(v for v in col if v is not None)
            else:
                per_layer.append(None)
        values = sorted(pool)
        index = {v: i for i, v in enumerate(values)}
        code = np.full(n_u, -1, dtype=np.int32)
        for li, col in enumerate(per_layer):
            if col is None:
                continue
            layer_codes = np.array(
                [index[v] if v is not None else -1 for v in col] + [-1], np.int32
            )
            rows = row_at[:, li]
            got = layer_codes[rows]  # rows == -1 picks the trailing -1
            take = (code < 0) & (got >= 0)
            code[take] = got[take]
            if attr == "network_type":
                winner_layer[take] = li
                winner_row[take] = rows[take]
        attr_codes[attr] = code
        attr_values[attr] = values

    # where no type was given, the ASN -> type mapping, else Unknown
    types = list(attr_values["network_type"])
    type_code = attr_codes["network_type"]
    if asn_types:
        asn_vals = attr_values["asn"]
        extra = sorted({t for t in asn_types.values() if t not in types})
        types = sorted(set(types) | set(extra))
        remap = np.array([types.index(t) for t in attr_values["network_type"]] + [-1], np.int32)
        type_code = remap[type_code]  # -1 stays -1 via the trailing entry
        asn_to_type = np.array(
            [types.index(asn_types[a]) if a in asn_types else -1 for a in asn_vals] + [-1], np.int32
        )
        from_asn = (type_code < 0) & (attr_codes["asn"] >= 0)
        type_code[from_asn] = asn_to_type[attr_codes["asn"][from_asn]]
        stats["asn_types"] = {"addresses_typed_by_asn": int(from_asn.sum())}
    attr_values["network_type"] = types
    attr_codes["network_type"] = type_code

    # where no layer gave a type, the row that gave the ASN (if any) is the match shown
    asn_layer = np.full(n_u, -1, dtype=np.int32)
    asn_row = np.full(n_u, -1, dtype=np.int32)
    for li, layer in enumerate(layers):
        if "asn" in layer.attrs.column_names:
            rows = row_at[:, li]
            has = np.asarray(layer.attrs.column("asn").fill_null(0).to_numpy(), dtype=np.int64)
            has = np.concatenate([has, [0]])[rows] > 0
            take = (asn_layer < 0) & has
            asn_layer[take] = li
            asn_row[take] = rows[take]
    no_type_row = winner_layer < 0
    winner_layer[no_type_row] = asn_layer[no_type_row]
    winner_row[no_type_row] = asn_row[no_type_row]

    # a network = one attribute tuple from one winning row; -1 where nothing matched at all
    key = np.stack(
        [
            attr_codes["network_type"],
            attr_codes["asn"],
            attr_codes["org"],
            attr_codes["country"],
            winner_layer,
            winner_row,
        ],
        axis=1,
    )
    nothing = (key[:, :4] < 0).all(axis=1) & (winner_layer < 0)
    uniq, inverse = np.unique(key[~nothing], axis=0, return_inverse=True)
    net = np.full(n_u, -1, dtype=np.int32)
    net[~nothing] = inverse.reshape(-1).astype(np.int32)

    # compact: merge neighbours with the same network
    keep = np.ones(n_u, dtype=bool)
    keep[1:] = net[1:] != net[:-1]
    starts_hi, starts_lo, values = u_hi[keep], u_lo[keep], net[keep]

    def pick(attr: str, codes: np.ndarray) -> list[Any]:
        vals = attr_values[attr]
        return [vals[c] if c >= 0 else None for c in codes]

    layer_names = [layer.name for layer in layers]
    networks = pa.table(
        {
            "network_type": pa.array(
                [t if t is not None else "Unknown" for t in pick("network_type", uniq[:, 0])],
                pa.string(),
            ),
            "asn": pa.array(
                [a if a is not None else 0 for a in pick("asn", uniq[:, 1])], pa.uint32()
            ),
            "org": pa.array(pick("org", uniq[:, 2]), pa.string()),
            "country": pa.array(pick("country", uniq[:, 3]), pa.string()),
            "source": pa.array(
                [layer_names[i] if i >= 0 else None for i in uniq[:, 4]], pa.string()
            ),
            "source_row": pa.array(uniq[:, 5], pa.int32()),
        }
    )
    return Compiled(starts_hi, starts_lo, values, networks, stats)
