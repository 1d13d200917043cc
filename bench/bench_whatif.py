"""Benchmark: a five-step what-if over a quarter of 5-minute buckets, 20 links, 12 months.

    python bench/bench_whatif.py                 # 2 M records over 92 days, 20 timed calls
    python bench/bench_whatif.py --quick         # smoke run (CI-sized)
    python bench/bench_whatif.py --results bench/RESULTS.md   # also write its section there

Builds its own cube (a synthetic archive, built at a 5-minute bucket; kept under
bench/_data/whatif for the next run) and a plan of 20 selection links whose capacities are
set from the observed p95 (x1.6), then times:

- flowatlas in process: ``cube.whatif(scenario)``, warm (the cube's traffic cached after the
  first call): p50 and p95 of ``--repeat`` calls; and the first call, which reads the cube's
  cells into per-link series;
- the CLI: ``flowatlas whatif CUBE --scenario FILE --json``, whole process (best and median
  of 3, wall and CPU time), and ``flowatlas whatif DEMO --scenario neocloud-migration`` on
  the demo's half year (the cube ``--bucket-effect`` builds, or ``--demo-cube``);
- the competitor: the same projection written plainly in pandas (apply the steps to the long
  frame of cells month by month, sum per link side and bucket, sort for the nearest-rank
  p95), checked against flowatlas's answer month by month.

Records/s mean nothing here: the cube is the input. Prints markdown tables; writes nothing
unless ``--results`` is given.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, markdown_table, provenance, run_measured, write_section

from flowatlas.config import assign_links, load_config
from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import open_cube
from flowatlas.synth import synthesize
from flowatlas.whatif import WhatIfWarning, load_scenario, nearest_rank
from flowatlas.whatif.scenarios import workload_series

HEADING = "What-if"
DATA = Path(__file__).resolve().parent / "_data" / "whatif"
TYPES = ["CDN", "Hosting", "Hyperscaler", "ISP Regional", "ISP Tier1", "Neocloud", "Migration"]
#: 20 selection links: one per region and type (CA-East's two ISP types share one)
LINKS = [
    *((f"usw-{t.lower().replace(' ', '-')}", "US-West", [t]) for t in TYPES),
    *((f"use-{t.lower().replace(' ', '-')}", "US-East", [t]) for t in TYPES),
    ("cae-cdn", "CA-East", ["CDN"]),
    ("cae-hosting", "CA-East", ["Hosting"]),
    ("cae-hyperscaler", "CA-East", ["Hyperscaler"]),
    ("cae-isp", "CA-East", ["ISP Regional", "ISP Tier1"]),
    ("cae-neocloud", "CA-East", ["Neocloud"]),
    ("cae-migration", "CA-East", ["Migration"]),
]
SCENARIO = """\
name = "bench-five-steps"
description = "scale, shift, add, grow, fail"

[[steps]]
op = "scale"
factor = 2
regions = ["US-East"]
network_types = ["Neocloud"]
directions = ["egress"]

[[steps]]
op = "shift"
share = 100
network_types = ["Migration"]
from_region = "US-East"
to_region = "CA-East"

[[steps]]
op = "add"
rate_gbps = 40
region = "US-West"
network_type = "Hyperscaler"
direction = "egress"
hours = "9-17"
days = "mon-fri"
start = {start!r}

[[steps]]
op = "grow"
monthly_percent = 2

[[steps]]
op = "fail"
link = "usw-isp-tier1"
backups = ["usw-isp-regional", "usw-cdn"]
"""


def plan_text(archive_config: str, capacities: dict[str, float]) -> str:
    """The archive's regions (not its interface links) and the 20 links with capacities."""
    head = archive_config.split("[[links]]")[0]
    parts = [head]
    for name, region, types in LINKS:
        parts.append(
            f'[[links]]\nname = "{name}"\nregion = "{region}"\n'
            f"capacity_gbps = {capacities.get(name, 1e6):g}\n"
            f"select = {{ network_types = {types!r} }}\n\n".replace("'", '"')
        )
    return "".join(parts)


def prepare(data: Path, records: int, days: int) -> tuple[Path, Path, Path]:
    """The archive, the 5-minute cube, the plan and the scenario (reused when present)."""
    tag = f"r{records}-d{days}"
    archive, cube = data / f"archive-{tag}", data / f"cube-{tag}"
    if not (archive / "flowatlas.toml").exists():
        print(f"synthesizing {records:,} records over {days} days -> {archive}", file=sys.stderr)
        synthesize(archive, records=records, start="2025-10-01", days=days, overwrite=True)
    if not (cube / "cube.json").exists():
        cfg = (archive / "flowatlas.toml").read_text().replace('bucket = "1h"', 'bucket = "5m"')
        cfg = cfg.replace('path = "prefixes.csv"', f'path = "{archive}/prefixes.csv"')
        (data / "build-5m.toml").write_text(cfg)
        print(f"building the 5-minute cube -> {cube}", file=sys.stderr)
        build_cube(archive, cube, config=data / "build-5m.toml", overwrite=True)
    plan = data / f"plan-{tag}.toml"
    if not plan.exists():
        plan.write_text(plan_text((archive / "flowatlas.toml").read_text(), {}))
        probe = open_cube(cube).whatif(None, horizon=1, config=plan).summary
        caps = {}
        for name, *_ in LINKS:
            p95 = probe.loc[probe["link"] == name, "baseline_now_gbps"].max()
            caps[name] = max(10.0, math.ceil(1.6 * p95 / 10) * 10)
        plan.write_text(plan_text((archive / "flowatlas.toml").read_text(), caps))
    scenario = data / "five-steps.toml"
    scenario.write_text(SCENARIO.format(start="2026-03" if days >= 60 else 0))
    return cube, plan, scenario


# --------------------------------------------------------------------------- the competitor


def pandas_projection(cube_path: Path, plan: Path, scenario: Path, months: int) -> pd.DataFrame:
    """The same projection, plainly in pandas: each month's traffic materialised, summed
    per link side and bucket, and the nearest-rank p95 taken by sorting. Rates in Gbps at
    the end of each month (t = 0..months)."""
    cube = open_cube(cube_path)
    cfg = load_config(plan)
    caps = {lk.name: lk.capacity_gbps for lk in cfg.links}
    sc = load_scenario(scenario)
    scale, shift, add, grow, fail = sc.steps
    cells = cube.cells
    df = pd.DataFrame(
        {
            "bucket_start": cells["bucket_start"],
            "region": cells["region"].astype(str),
            "network_type": cells["network_type"].astype(str),
            "direction": cells["direction"].astype(str),
            "bytes": cells["bytes"].astype("float64"),
        }
    )
    df["link"] = assign_links(cfg, [None] * len(df), df["region"], df["network_type"],
                              df["direction"])  # fmt: skip
    bucket = pd.Timedelta(seconds=int(cube.meta["bucket_seconds"]))
    buckets = pd.date_range(df["bucket_start"].min(), df["bucket_start"].max(), freq=bucket)
    first_add = 3  # the add starts in the third month of the horizon (2026-03)
    if not isinstance(add.start, str):
        first_add = 0
    base_add = pd.DataFrame({"bucket_start": buckets})
    span = SimpleNamespace(bucket_seconds=bucket.seconds, start=buckets[0], n_buckets=len(buckets))
    base_add["bytes"] = workload_series(add, span)  # the same hours and days as flowatlas
    base_add = base_add.assign(
        region=add.region, network_type=add.network_type, direction=add.direction
    )
    out = []
    for m in range(months + 1):
        d = df.copy()
        sel = (
            d["region"].isin(scale.regions)
            & d["network_type"].isin(scale.network_types)
            & d["direction"].isin(scale.directions)
        )
        d.loc[sel, "bytes"] *= scale.factor
        moving = (d["region"] == shift.from_region) & d["network_type"].isin(shift.network_types)
        dest = d[(d["region"] == shift.to_region) & d["network_type"].isin(shift.network_types)]
        share = dest.groupby(["network_type", "direction", "link"])["bytes"].sum()
        share = (share / share.groupby(level=[0, 1]).transform("sum")).rename("frac").reset_index()
        moved = d[moving].drop(columns="link").merge(share, on=["network_type", "direction"])
        moved["bytes"] *= moved.pop("frac") * shift.share / 100
        moved["region"] = shift.to_region
        d.loc[moving, "bytes"] *= 1 - shift.share / 100
        d = pd.concat([d, moved], ignore_index=True)
        if m >= first_add:
            a = base_add.copy()
            carried = d[(d["region"] == add.region) & (d["network_type"] == add.network_type)
                        & (d["direction"] == add.direction)]  # fmt: skip
            frac = carried.groupby("link")["bytes"].sum()
            frac = frac[frac > 0] / frac.sum()
            a = pd.concat([a.assign(link=lk, bytes=a["bytes"] * f) for lk, f in frac.items()])
            d = pd.concat([d, a], ignore_index=True)
        d["bytes"] *= (1 + grow.monthly_percent / 100) ** m
        failed = d["link"] == fail.link
        total_cap = sum(caps[b] for b in fail.backups)
        backups = [d[failed].assign(link=b, bytes=d.loc[failed, "bytes"] * caps[b] / total_cap)
                   for b in fail.backups]  # fmt: skip
        d = pd.concat([d[~failed], *backups], ignore_index=True)
        d["side"] = np.where(d["direction"] == "egress", "out", "in")
        d.loc[d["direction"] == "internal", "side"] = "out"
        wide = d.groupby(["bucket_start", "link", "side"])["bytes"].sum().unstack([1, 2])
        wide = wide.reindex(buckets, fill_value=0.0).fillna(0.0)
        k = nearest_rank(len(wide), 95.0)
        p95 = wide.apply(lambda s, k=k: s.sort_values().iloc[k])
        gbps = p95 * 8 / bucket.seconds / 1e9
        out.append(gbps.rename("rate_gbps").reset_index().assign(t=m))
    return pd.concat(out, ignore_index=True).rename(columns={"side": "direction"})


# --------------------------------------------------------------------------- bucket effect


def bucket_effect(data: Path, records: int = 3_000_000) -> str:
    """How much an hourly cube understates the peaks of 5-minute rates: the demo's archive
    (half a year from 2025-07-01, seed 1) built at both buckets, the 20 links' statistics."""
    archive = data / f"demo-{records}"
    if not (archive / "flowatlas.toml").exists():
        synthesize(archive, records=records, start="2025-07-01", days=184, seed=1, overwrite=True)
    text = (archive / "flowatlas.toml").read_text()
    text = text.replace('path = "prefixes.csv"', f'path = "{archive}/prefixes.csv"')
    plan = data / f"demo-{records}-plan.toml"
    plan.write_text(plan_text((archive / "flowatlas.toml").read_text(), {}))
    stats: dict[tuple[str, str], pd.Series] = {}
    for bucket in ("1h", "5m"):
        cube = data / f"demo-{records}-cube-{bucket}"
        if not (cube / "cube.json").exists():
            cfg = data / f"demo-{records}-build-{bucket}.toml"
            cfg.write_text(text.replace('bucket = "1h"', f'bucket = "{bucket}"'))
            build_cube(archive, cube, config=cfg, overwrite=True)
        c = open_cube(cube)
        for p in ("95", "99", "max", "mean"):
            s = c.whatif(None, horizon=1, config=plan, percentile=p).summary
            stats[(bucket, p)] = s.set_index(["link", "direction"])["baseline_now_gbps"]
    df = pd.DataFrame(stats)
    df = df[df[("5m", "95")] > 0]
    rows = []
    for p in ("95", "99", "max", "mean"):
        r = df[("1h", p)] / df[("5m", p)]
        rows.append([p, f"{r.median():.2f}", f"{r.min():.2f} - {r.max():.2f}"])
    head = ["statistic", f"hourly / 5-minute, median over {len(df)} link sides", "range"]
    return markdown_table(head, rows)


# --------------------------------------------------------------------------- the CLI


def cli_times(args: list[str], runs: int = 3) -> list[tuple[float, float]] | None:
    """(wall, CPU) seconds of ``flowatlas ARGS`` as a whole process, ``runs`` times; None
    (and its error printed) if it fails."""
    out = []
    for _ in range(runs):
        m = run_measured([sys.executable, "-m", "flowatlas", *args])
        if m.returncode != 0:
            print(m.stderr, file=sys.stderr)
            return None
        out.append((m.seconds, m.cpu_seconds))
    return out


def cli_cells(times: list[tuple[float, float]]) -> list[str]:
    """The best wall time, then the median and the CPU time (of the best run)."""
    best = min(times)
    median = statistics.median(t for t, _ in times)
    return [f"{best[0]:.2f} s", f"median of {len(times)}: {median:.2f} s; CPU {best[1]:.2f} s"]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--days", type=int, default=92)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="20,000 records over 35 days")
    ap.add_argument("--data", type=Path, default=DATA, help="where the archive and cube live")
    ap.add_argument("--results", type=Path, default=None, help="write the section here")
    ap.add_argument("--demo-cube", type=Path, default=None,
                    help="also time the CLI on this cube with the shipped example "
                    "[DATA/demo-3000000-cube-1h, built by --bucket-effect]")  # fmt: skip
    ap.add_argument(
        "--bucket-effect",
        action="store_true",
        help="instead: hourly against 5-minute percentiles on the demo's archive",
    )
    args = ap.parse_args(argv)
    if args.bucket_effect:
        args.data.mkdir(parents=True, exist_ok=True)
        warnings.simplefilter("ignore", WhatIfWarning)
        print(bucket_effect(args.data, 30_000 if args.quick else 3_000_000))
        return 0
    if args.quick:
        args.records, args.days, args.repeat = 20_000, 35, 3
    args.data.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", WhatIfWarning)
    cube_path, plan, scenario = prepare(args.data, args.records, args.days)
    load_before = load_average()

    t0, c0 = time.perf_counter(), time.process_time()
    cube = open_cube(cube_path)
    t_open, c_open = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    result = cube.whatif(scenario, horizon="12m", config=plan)
    t_first, c_first = time.perf_counter() - t0, time.process_time() - c0
    warm, warm_cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = cube.whatif(scenario, horizon="12m", config=plan)
        warm.append(time.perf_counter() - t0)
        warm_cpu.append(time.process_time() - c0)
    p50 = statistics.median(warm)
    p95 = sorted(warm)[nearest_rank(len(warm), 95)]

    cmd = ["whatif", str(cube_path), "--config", str(plan), "--scenario", str(scenario), "--json"]
    cli = cli_times(cmd)
    if cli is None:
        return 1
    demo = args.demo_cube if args.demo_cube is not None else args.data / "demo-3000000-cube-1h"
    demo_cli = None
    if (demo / "cube.json").exists():
        demo_cli = cli_times(["whatif", str(demo), "--scenario", "neocloud-migration",
                              "--horizon", "12m"])  # fmt: skip
        if demo_cli is None:
            return 1

    t0 = time.perf_counter()
    theirs = pandas_projection(cube_path, plan, scenario, 12)
    t_pandas = time.perf_counter() - t0

    ours = result.projection[result.projection["case"] == "scenario"]
    merged = ours.merge(theirs, on=["link", "direction", "t"], how="left", suffixes=("", "_pd"))
    merged["rate_gbps_pd"] = merged["rate_gbps_pd"].fillna(0.0)
    diff = (merged["rate_gbps"] - merged["rate_gbps_pd"]).abs()
    rel = float((diff / merged["rate_gbps"].abs().clip(lower=1e-9)).max())
    verdict = "equal" if rel < 1e-9 else f"DIFFERENT (max rel {rel:.2e})"

    tr = cube._cache[next(k for k in cube._cache if isinstance(k, tuple) and k[0] == "whatif")]
    sizes = (
        f"{args.records:,} records over {args.days} days, {len(cube.cells):,} cube cells, "
        f"{tr.n_buckets:,} buckets of 5 min, {len(tr.groups)} traffic groups, "
        f"{len(LINKS)} links (+ catch-alls), 5 steps, 12-month horizon"
    )
    rows = [
        ["flowatlas in process (warm), p50", f"{p50 * 1e3:.1f} ms",
         f"CPU {statistics.median(warm_cpu) * 1e3:.1f} ms; equal to pandas: {verdict}"],
        ["flowatlas in process (warm), p95", f"{p95 * 1e3:.1f} ms", f"{args.repeat} calls"],
        ["flowatlas first call (reads the cube's cells)", f"{t_first * 1e3:.0f} ms",
         f"CPU {c_first * 1e3:.0f} ms; open_cube before it: {t_open * 1e3:.0f} ms "
         f"(CPU {c_open * 1e3:.0f} ms)"],
        ["flowatlas CLI (whole process, --json)", *cli_cells(cli)],
        ["flowatlas CLI on the demo's cube (neocloud-migration, 12m)",
         *(cli_cells(demo_cli) if demo_cli else
           ["not measured", f"no cube at {demo}: run --bucket-effect, or give --demo-cube"])],
        ["pandas, plain (13 month-ends only)", f"{t_pandas:.2f} s",
         f"{t_pandas / p50:,.0f}x the warm p50"],
    ]  # fmt: skip
    table = markdown_table(["what", "time", "notes"], rows)
    lines = [
        f"{sizes}.",
        "",
        table,
        "",
        *provenance(
            ["numpy", "pandas"],
            load_before,
            "python bench/bench_whatif.py" + (" --quick" if args.quick else ""),
        ),
    ]
    body = "\n".join(lines)
    print(body)
    if args.results is not None:
        write_section(args.results, HEADING, body)
    return 0 if verdict == "equal" else 1


if __name__ == "__main__":
    sys.exit(main())
