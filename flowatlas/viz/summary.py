"""The report's findings as sentences computed from the cube, and its Markdown summary.

Every number in a sentence comes from the views (and so from the cube); nothing is written
by hand. The sentences follow the seed report's: the share of traffic to other clouds, the
heaviest cell, magnitude and uniqueness leaders, IPv6, and where neocloud endpoints sit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from flowatlas.viz import units
from flowatlas.viz.query import OTHER_CLOUDS
from flowatlas.vocab import CLOUD_TYPES

if TYPE_CHECKING:
    from flowatlas.viz.views import Views


def _moved(before: float, after: float) -> str:
    if round(100 * after, 1) == round(100 * before, 1):
        return f"stayed at {units.share(after)}"
    verb = "rose" if after > before else "fell"
    return f"{verb} from {units.share(before)} to {units.share(after)}"


def and_list(names: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def share_sentences(views: Views) -> list[str]:
    """How the share of other clouds, and of each cloud type, moved between two periods."""
    cmp = views.comparison
    if cmp is None:
        return []
    span = f"(from {cmp.before_label} to {cmp.after_label})"
    clouds = and_list([t for t in CLOUD_TYPES if t in cmp.after.index])
    out = []
    if OTHER_CLOUDS in cmp.after.index and math.isfinite(cmp.after[OTHER_CLOUDS]):
        out.append(
            f"Traffic to other clouds ({clouds}) "
            f"{_moved(cmp.before[OTHER_CLOUDS], cmp.after[OTHER_CLOUDS])} of all traffic {span}."
        )
    for t in CLOUD_TYPES:
        if t in cmp.after.index and math.isfinite(cmp.after[t]):
            out.append(f"{t}'s share {_moved(cmp.before[t], cmp.after[t])} {span}.")
    return out


def volume_sentence(views: Views) -> str | None:
    """The heaviest region x network type cell and its share of all traffic."""
    v = views.volume.stack().dropna()
    if not len(v) or v.max() <= 0:
        return None
    (region, t), top = v.idxmax(), float(v.max())
    return (
        f"The largest volume is {region} <-> {t}: {units.fmt(top, 'volume')}, "
        f"{units.share(top / float(v.sum()))} of all traffic."
    )


def magnitude_sentence(views: Views) -> str | None:
    """The network types with the heaviest and the lightest traffic per remote IP."""
    m = views.magnitude_by_type["magnitude"].dropna()
    m = m[m > 0].sort_values(ascending=False)
    if len(m) < 2:
        return None
    top2 = [f"{t} ({units.fmt(float(v), 'magnitude')} per IP)" for t, v in m.iloc[:2].items()]
    low_t, low_v = m.index[-1], float(m.iloc[-1])
    ratio = float(m.iloc[0]) / low_v
    return (
        f"Magnitude is highest for {and_list(top2)}, {ratio:,.0f} times that of "
        f"{low_t} ({units.fmt(low_v, 'magnitude')} per IP)."
    )


def uniqueness_sentence(views: Views) -> str | None:
    """The region with the most distinct remote IPs, and the type with the fewest."""
    ru = views.region_uniques["uniques"].dropna()
    ut = views.magnitude_by_type["uniques"].dropna()
    if not len(ru) or not len(ut):
        return None
    r = ru.idxmax()
    t = ut[ut > 0].idxmin() if (ut > 0).any() else None
    text = f"{r} has the most distinct remote IPs ({units.fmt(float(ru[r]), 'count')})"
    if t is not None:
        text += (
            f"; {t} traffic involves the fewest ({_addresses(float(ut[t]))} "
            f"for {units.share(float(views.share.loc[t, 'share']))} of the volume)"
        )
    return text + "."


def _addresses(n: float) -> str:
    return f"{units.fmt(n, 'count')} address" + ("" if n == 1 else "es")


def ipv6_sentence(views: Views) -> str | None:
    """IPv6's share of volume, and its addresses against its /64 prefixes."""
    ipv = views.ip_versions
    if 6 not in ipv.index:
        return None
    r = ipv.loc[6]
    text = f"IPv6 carries {units.share(float(r['share']))} of the volume"
    if math.isfinite(float(r["uniques"])) and math.isfinite(float(r["uniques_prefix"])):
        text += (
            f"; its {units.fmt(float(r['uniques']), 'count')} distinct addresses fall in "
            f"{units.fmt(float(r['uniques_prefix']), 'count')} /64 prefixes"
        )
    return text + "."


def metro_sentence(views: Views) -> str | None:
    """Where neocloud endpoints sit: the top metros by volume."""
    df = views.metros.get("Neocloud", (None, ""))[0]
    if df is None or not len(df):
        return None
    top = [f"{r.metro} ({units.share(float(r.share))})" for r in df.head(6).itertuples()]
    return f"Neocloud endpoints cluster in {', '.join(top)}."


def sentences(views: Views) -> list[str]:
    """Every finding, in the report's order."""
    out = share_sentences(views)
    for make in (volume_sentence, magnitude_sentence, uniqueness_sentence, ipv6_sentence,
                 metro_sentence):  # fmt: skip
        s = make(views)
        if s:
            out.append(s)
    return out


def markdown(views: Views, *, title: str, pngs: list[str] = ()) -> str:
    """The Markdown summary: the findings, the share table, and the figures."""
    lines = [f"# {title}", ""]
    if views.first is not None:
        lines += [f"{views.first:%Y-%m-%d} to {views.last:%Y-%m-%d}.", ""]
    lines += [f"- {s}" for s in sentences(views)] + [""]
    qs = views.quarterly_share
    cmp = views.comparison
    cats = [c for c in [*views.types, OTHER_CLOUDS] if c in qs.columns]
    lines += ["## Share of all traffic", ""]
    lines.append("| category | " + " | ".join(str(p) for p in qs.index) + " | change |")
    lines.append("|---|" + "---:|" * (len(qs.index) + 1))
    for c in cats:
        delta = units.points(float(cmp.deltas[c])) if cmp is not None else "-"
        cells = " | ".join(units.share(float(v)) for v in qs[c])
        lines.append(f"| {c} | {cells} | {delta} |")
    lines.append("")
    if pngs:
        lines += ["## Figures", ""] + [f"![{p[:-4]}]({p})" for p in pngs] + [""]
    return "\n".join(lines)
