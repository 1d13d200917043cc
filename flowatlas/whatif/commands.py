"""``flowatlas whatif``: a scenario's run-out table on a cube (a thin layer over the API)."""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import TextIO

import click

from flowatlas.errors import OutputError


def _si(value: float, unit: str) -> str:
    """A value in bytes ("B") or bits per second ("bps"), in flowatlas's one set of units."""
    from flowatlas.viz.units import fmt

    return fmt(value, {"B": "volume", "bps": "rate"}[unit])


def _pct(u: float) -> str:
    return "-" if u is None or not math.isfinite(u) else f"{100 * u:.0f}%"


def _date(ts) -> str:
    import pandas as pd

    return "-" if ts is None or pd.isna(ts) else ts.strftime("%Y-%m-%d")


def print_whatif(result, out: TextIO, *, title: str = "what-if") -> None:
    """The steps and the run-out table, baseline and scenario side by side."""
    from flowatlas.viz.terminal import _table

    s = result.settings
    out.write(
        f"\n{title}: {s['scenario'] or 'baseline'}"
        f"{' - ' + s['description'] if s['description'] else ''}\n"
        f"  {s['percentile']} of {s['bucket_seconds'] // 60}-minute rates over "
        f"{s['window_start'][:10]} .. {s['window_end'][:10]} (replayed), horizon "
        f"{s['first_month']} .. {s['last_month']}, threshold {s['threshold_percent']:g}%\n"
    )
    for w in result.warnings:
        out.write(f"  warning: {w}\n")
    if len(result.steps):
        rows = []
        for st in result.steps.itertuples(index=False):
            extra = ""
            if st.op == "grow" and st.r2 is not None and not _nan(st.r2):
                extra = f" (fitted {st.monthly_percent:+.2f}%/month, R² {st.r2:.2f})"
            rows.append([str(st.step), st.what + extra, st.start, _si(st.bytes, "B")])
        _table("steps, in order", ["#", "what", "from", "bytes"], rows, out)
    last = s["last_month"]
    header = ["#", "link", "dir", "capacity"]
    for case in ("baseline", "scenario"):
        c = case[:4]
        header += [f"{c} now", f"{c} {last}", f"{c} >{s['threshold_percent']:g}%", f"{c} run-out"]
    rows = []
    for r in result.summary.itertuples(index=False):
        row = [str(r.rank), r.link, r.direction, _si(r.capacity_gbps * 1e9, "bps")]
        for case in ("baseline", "scenario"):
            now = getattr(r, f"{case}_now_gbps")
            util_now = getattr(r, f"{case}_util_now")
            row += [
                f"{_si(now * 1e9, 'bps')} {_pct(util_now)}",
                _pct(getattr(r, f"{case}_util_end")),
                _label(getattr(r, f"{case}_over_threshold")),
                "now"
                if getattr(r, f"{case}_runout_months") == 0
                else _date(getattr(r, f"{case}_runout")),
            ]
        rows.append(row)
    if rows:
        _table("links, soonest run-out first (scenario)", header, rows, out)


def _label(v) -> str:
    return v if isinstance(v, str) else "-"


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def resolve_scenario(text: str | None) -> Path | None:
    """A scenario file, or the name of one shipped with flowatlas (neocloud-migration)."""
    if text is None:
        return None
    p = Path(text)
    if p.exists() or p.suffix.lower() in (".toml", ".json") or "/" in text:
        return p
    from flowatlas.whatif import example_scenario

    return example_scenario(text)


@click.command()
@click.argument("cube", type=click.Path(path_type=Path))
@click.option("--scenario", "-s", default=None,
              help="Scenario file (TOML or JSON), or a shipped example: neocloud-migration. "
              "Without it, the baseline alone.")  # fmt: skip
@click.option("--horizon", default=None,
              help="Months ahead: 12m, 18m, 1y, 2y [the scenario's, else 12m].")  # fmt: skip
@click.option("--percentile", default=None,
              help="Of bucket rates: 95, 99, max, mean [the scenario's, else 95].")  # fmt: skip
@click.option("--threshold", type=float, default=None,
              help="Utilisation threshold, percent [the scenario's, else 80].")  # fmt: skip
@click.option("--window", default=None,
              help="Replay only the cube's last days: 90d, 4w [all of it].")  # fmt: skip
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help="Links and capacities from this configuration [the cube's own].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
@click.option("--html", type=click.Path(path_type=Path), default=None,
              help="Also write a chart page: utilisation, capacity, run-out.")  # fmt: skip
def whatif(cube, scenario, horizon, percentile, threshold, window, config, as_json, html) -> None:
    """Project each link's utilisation under a scenario: which links run out, and when.

    Reads the cube (never the archive). Scenarios scale, shift, add, grow and fail traffic
    in the order written (docs/whatif.md); the baseline is the cube's period replayed.
    """
    from flowatlas.engine.cube import open_cube
    from flowatlas.whatif import WhatIfWarning, check_threshold, parse_horizon, parse_percentile
    from flowatlas.whatif import parse_window as check_window
    from flowatlas.whatif import whatif as run_whatif

    # options first, so that their errors name the option
    horizon = None if horizon is None else parse_horizon(horizon, "--horizon")
    percentile = None if percentile is None else parse_percentile(percentile, "--percentile")
    if threshold is not None:
        check_threshold(threshold, "--threshold")
    check_window(window, "--window")
    t0 = time.perf_counter()
    c = open_cube(cube)
    with warnings.catch_warnings():  # they are in the answer (text and JSON) already
        warnings.simplefilter("ignore", WhatIfWarning)
        result = run_whatif(
            c,
            resolve_scenario(scenario),
            horizon=horizon,
            percentile=percentile,
            threshold=threshold,
            window=window,
            config=config,
        )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        print_whatif(result, sys.stdout, title=f"flowatlas whatif {cube}")
    if html is not None:
        from flowatlas.viz.whatif_page import write_page

        try:
            write_page(result, html)
        except OSError as exc:
            raise OutputError(f"{html}: cannot write: {exc.strerror or exc}") from None
        click.echo(f"chart page written to {html}", err=True)
    click.echo(f"what-if in {time.perf_counter() - t0:.2f} s", err=True)
