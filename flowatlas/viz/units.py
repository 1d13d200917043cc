"""Units: every number flowatlas shows, formatted one way for the page, the server and the terminal.

Kinds and their units, the prefix chosen by the value's magnitude (decimal, steps of 1000):

- ``volume``: B, kB, MB, GB, TB, PB, EB (bytes)
- ``magnitude``: b, kb, Mb, Gb, Tb, Pb, Eb (bits per unique remote IP)
- ``rate``: bps, kbps, Mbps, Gbps, Tbps, Pbps, Ebps (bits per second)
- ``count``: plain numbers with thousands separators, then k, M, G (distinct addresses)
- ``index``: a plain number without unit or prefix (an HHI of 0.163)
- ``share``: percent of a whole (0.496 -> 49.6%)

Axis ticks use :func:`tick_labels`, which picks one prefix for a linear axis (the largest tick's),
each tick's own prefix on a log axis, and as many decimals as the ticks need to differ, so an
axis never reads "0, 0, 0" or "2.03925e+6". The browser runs the same algorithm (:data:`JS`,
:func:`tick_formatter`); tests check the two agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

#: kind -> units from the smallest prefix up
UNITS: dict[str, tuple[str, ...]] = {
    "volume": ("B", "kB", "MB", "GB", "TB", "PB", "EB"),
    "magnitude": ("b", "kb", "Mb", "Gb", "Tb", "Pb", "Eb"),
    "rate": ("bps", "kbps", "Mbps", "Gbps", "Tbps", "Pbps", "Ebps"),
    "count": ("", "k", "M", "G", "T", "P", "E"),
    "index": ("",),
}
KINDS = (*UNITS, "share")
MISSING = "-"
MAX_DECIMALS = 6


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown unit kind {kind!r} (one of {', '.join(KINDS)})")


def _finite(value: float | None) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def prefix_index(value: float, kind: str) -> int:
    """Which unit of ``kind`` a value reads best in: the largest with a scaled value >= 1."""
    v = abs(value)
    if kind == "share" or not math.isfinite(v) or v < 1000:
        return 0
    return min(math.floor(math.log10(v) / 3 + 1e-12), len(UNITS[kind]) - 1)


def _join(number: str, unit: str) -> str:
    return f"{number} {unit}" if unit else number


def fmt(value: float | None, kind: str, digits: int = 3) -> str:
    """One value with its unit, ``digits`` significant digits: 8.8e17 B -> '880 PB'.

    Counts below a million are written out ('12,345'); missing values are '-'.
    """
    _check(kind)
    if not _finite(value):
        return MISSING
    value = float(value)
    if kind == "share":
        return f"{100 * value:.1f}%"
    if kind == "count" and abs(value) < 1e6:
        return f"{value:,.0f}"
    if value == 0:
        return _join("0", UNITS[kind][0])
    units = UNITS[kind]
    p = prefix_index(value, kind)
    scaled = value / 1000**p
    text = _sig(scaled, digits)
    if abs(float(text)) >= 1000 and p + 1 < len(units):  # 999.7 rounds up to the next prefix
        p += 1
        text = _sig(value / 1000**p, digits)
    return _join(text, units[p])


def _sig(x: float, digits: int) -> str:
    """``x`` to ``digits`` significant digits, in positional notation, trailing zeros dropped."""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def share(value: float | None) -> str:
    """A share of a whole as a percentage with one decimal (0.496 -> '49.6%')."""
    return fmt(value, "share")


def points(delta: float | None) -> str:
    """A change of share in percentage points, signed (0.134 -> '+13.4 pp')."""
    if not _finite(delta):
        return MISSING
    return f"{100 * float(delta):+.1f} pp"


def _decimals(scaled: Sequence[float]) -> int | None:
    """The fewest decimals (<= MAX_DECIMALS) that write every value exactly and tell them apart.

    None when there are none (values far below one unit): the caller writes significant digits.
    """
    for d in range(MAX_DECIMALS + 1):
        m = 10**d
        exact = all(abs(round(v * m) - v * m) <= 1e-6 * max(1.0, abs(v * m)) for v in scaled)
        if exact and len({round(v * m) for v in scaled}) == len(set(scaled)):
            return d
    return None


def tick_labels(ticks: Sequence[float], kind: str, log: bool = False) -> list[str]:
    """Axis labels for ``ticks`` (the browser's formatter runs the same steps, see :data:`JS`).

    Linear axis: one unit for every tick (the largest tick's), the fewest decimals that tell
    the ticks apart. Log axis: each tick in its own unit, up to 3 significant digits.
    """
    _check(kind)
    vals = [float(t) for t in ticks]
    finite = [v for v in vals if math.isfinite(v)]
    if kind == "share":
        d = _decimals([100 * v for v in finite])
        return [
            ("" if not math.isfinite(v) else _sig(100 * v, 3) if d is None else f"{100 * v:.{d}f}")
            + ("%" if math.isfinite(v) else "")
            for v in vals
        ]
    units = UNITS[kind]
    if log:
        out = []
        for v in vals:
            if not math.isfinite(v):
                out.append("")
                continue
            p = prefix_index(v, kind)
            out.append(_join(_sig(v / 1000**p, 3), units[p]))
        return out
    top = max((abs(v) for v in finite), default=0.0)
    p = prefix_index(top, kind)
    scaled = [v / 1000**p for v in finite]
    d = _decimals(scaled)
    out = []
    for v in vals:
        if not math.isfinite(v):
            out.append("")
        elif v == 0:  # "0 k" reads oddly: a count's zero has no prefix
            out.append("0" if kind == "count" else _join("0", units[p]))
        elif d is None:
            out.append(_join(_sig(v / 1000**p, 3), units[p]))
        else:
            out.append(_join(f"{v / 1000**p:.{d}f}", units[p]))
    return out


#: the browser's copy of :func:`tick_labels` and :func:`fmt`, for Bokeh formatters
JS = """
const UNITS = __UNITS__;
const MAX_DECIMALS = __MAX_DECIMALS__;
function prefix_index(v, kind) {
  v = Math.abs(v);
  if (kind == "share" || !isFinite(v) || v < 1000) return 0;
  return Math.min(Math.floor(Math.log10(v) / 3 + 1e-12), UNITS[kind].length - 1);
}
function join(n, u) { return u ? n + " " + u : n; }
function sig(x, digits) {
  if (x == 0) return "0";
  const d = Math.max(0, digits - 1 - Math.floor(Math.log10(Math.abs(x))));
  let t = x.toFixed(d);
  if (t.indexOf(".") >= 0) t = t.replace(/0+$/, "").replace(/\\.$/, "");
  return (t == "-0" || t == "") ? "0" : t;
}
function decimals(scaled) {
  const distinct = new Set(scaled).size;
  for (let d = 0; d <= MAX_DECIMALS; d++) {
    const m = Math.pow(10, d);
    let exact = true;
    const seen = new Set();
    for (const v of scaled) {
      const r = Math.round(v * m);
      if (Math.abs(r - v * m) > 1e-6 * Math.max(1, Math.abs(v * m))) exact = false;
      seen.add(r);
    }
    if (exact && seen.size == distinct) return d;
  }
  return null;
}
function fmt(value, kind) {
  if (value === null || value === undefined || !isFinite(value)) return "-";
  if (kind == "share") return (100 * value).toFixed(1) + "%";
  if (kind == "count" && Math.abs(value) < 1e6)
    return Math.round(value).toLocaleString("en-US");
  if (value == 0) return join("0", UNITS[kind][0]);
  const units = UNITS[kind];
  let p = prefix_index(value, kind);
  let text = sig(value / Math.pow(1000, p), 3);
  if (Math.abs(parseFloat(text)) >= 1000 && p + 1 < units.length) {
    p += 1;
    text = sig(value / Math.pow(1000, p), 3);
  }
  return join(text, units[p]);
}
function tick_labels(ticks, kind, log) {
  const vals = Array.from(ticks, Number);
  const finite = vals.filter((v) => isFinite(v));
  if (kind == "share") {
    const d = decimals(finite.map((v) => 100 * v));
    return vals.map((v) => !isFinite(v) ? "" :
      (d === null ? sig(100 * v, 3) : (100 * v).toFixed(d)) + "%");
  }
  const units = UNITS[kind];
  if (log) {
    return vals.map((v) => {
      if (!isFinite(v)) return "";
      const p = prefix_index(v, kind);
      return join(sig(v / Math.pow(1000, p), 3), units[p]);
    });
  }
  let top = 0;
  for (const v of finite) top = Math.max(top, Math.abs(v));
  const p = prefix_index(top, kind);
  const d = decimals(finite.map((v) => v / Math.pow(1000, p)));
  return vals.map((v) => {
    if (!isFinite(v)) return "";
    if (v == 0) return kind == "count" ? "0" : join("0", units[p]);
    if (d === null) return join(sig(v / Math.pow(1000, p), 3), units[p]);
    return join((v / Math.pow(1000, p)).toFixed(d), units[p]);
  });
}
""".replace("__UNITS__", json.dumps(UNITS)).replace("__MAX_DECIMALS__", str(MAX_DECIMALS))


def tick_formatter(kind: str, *, log: bool = False):
    """A Bokeh tick formatter that writes ``kind``'s units the way :func:`tick_labels` does."""
    from bokeh.models import CustomJSTickFormatter

    _check(kind)
    code = JS + "return tick_labels(ticks, kind, log)[index];"
    return CustomJSTickFormatter(code=code, args={"kind": kind, "log": bool(log)})


def hover_formatter(kind: str):
    """A Bokeh hover formatter (``@column{custom}``) that writes values as :func:`fmt` does."""
    from bokeh.models import CustomJSHover

    _check(kind)
    return CustomJSHover(code=JS + "return fmt(value, kind);", args={"kind": kind})
