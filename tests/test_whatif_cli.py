"""`flowatlas whatif` end to end on a real small synthetic cube, and its one-line errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import one_line_error, run

from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import open_cube
from flowatlas.synth import synthesize
from flowatlas.whatif import Scenario, Shift, WhatIfWarning, example_scenario

OTHER_TYPES = ["CDN", "Hosting", "Hyperscaler", "ISP Regional", "ISP Tier1", "Unknown"]
#: selection links of the plan below: (name, region, network types, capacity, mode)
PLAN_LINKS = [
    ("use-neocloud", "US-East", ["Neocloud"], 400, "per-direction"),
    ("use-transit", "US-East", OTHER_TYPES, 200, "per-direction"),
    ("use-migration", "US-East", ["Migration"], 100, "per-direction"),
    ("cae-transit", "CA-East", [*OTHER_TYPES, "Neocloud"], 100, "per-direction"),
    ("cae-migration", "CA-East", ["Migration"], 100, "per-direction"),
    ("usw-transit", "US-West", [], 800, "shared"),
]


def plan_toml(archive_config: str) -> str:
    """The archive's regions (its interface links dropped) and selection links to plan."""
    head = archive_config.split("[[links]]")[0]
    parts = [head]
    for name, region, types, cap, mode in PLAN_LINKS:
        sel = f"select = {{ network_types = {json.dumps(types)} }}\n" if types else ""
        parts.append(
            f'[[links]]\nname = "{name}"\nregion = "{region}"\ncapacity_gbps = {cap}\n'
            f'capacity_mode = "{mode}"\n{sel}\n'
        )
    return "".join(parts)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("whatif")
    archive = root / "archive"
    synthesize(archive, records=20000, start="2025-09-01", days=92, seed=3, workers=1)
    build_cube(archive, root / "cube", workers=0)
    cfg = (archive / "flowatlas.toml").read_text()
    plan = root / "plan.toml"
    plan.write_text(
        plan_toml(cfg).replace('path = "prefixes.csv"', f'path = "{archive}/prefixes.csv"')
    )
    return {"root": root, "cube": root / "cube", "plan": plan}


def whatif_json(world, *args: str) -> dict:
    p = run("whatif", str(world["cube"]), "--config", str(world["plan"]), "--json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def by_link(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["link"], r["direction"]): r for r in rows}


def test_baseline_percentiles_match_an_oracle_over_the_cube_cells(world) -> None:
    """Independent of the engine: links by hand from the plan, p95 by sorting in pandas."""
    cube = open_cube(world["cube"])
    cells = cube.cells.copy()
    link_of = {}
    for name, region, types, _, _ in PLAN_LINKS:
        for t in types or cube.network_types:
            link_of[(region, t)] = name
    cells["link"] = [
        f"{r}/other" if d == "internal" else link_of.get((r, t), f"{r}/other")
        for r, t, d in zip(cells["region"], cells["network_type"], cells["direction"], strict=True)
    ]
    shared = {n for n, *_, mode in PLAN_LINKS if mode == "shared"}
    cells["side"] = np.where(cells["direction"].astype(str) == "egress", "out", "in")
    cells.loc[cells["direction"].astype(str) == "internal", "side"] = "out"
    cells.loc[cells["link"].isin(shared), "side"] = "both"
    buckets = pd.date_range(cells["bucket_start"].min(), cells["bucket_start"].max(), freq="1h")
    per = cells.groupby(["link", "side", "bucket_start"], observed=True)["bytes"].sum()
    answer = by_link(whatif_json(world, "--horizon", "1")["summary"])
    checked = 0
    for (link, side), series in per.groupby(level=[0, 1]):
        rates = series.droplevel([0, 1]).reindex(buckets, fill_value=0).to_numpy() * 8 / 3600
        srt = np.sort(rates.astype(float))
        expected = srt[math.ceil(0.95 * len(srt)) - 1] / 1e9
        got = answer[(link, side)]["baseline_now_gbps"]
        assert got == pytest.approx(expected, rel=1e-12), (link, side)
        checked += 1
    assert checked >= 8


def test_example_scenario_end_to_end(world) -> None:
    out = whatif_json(world, "--scenario", "neocloud-migration", "--horizon", "1y")
    assert out["settings"]["horizon_months"] == 12 and out["settings"]["percentile"] == "p95"
    assert out["settings"]["first_month"] == "2026-01"
    assert any("understates" in w for w in out["warnings"])  # 1 h buckets
    s = by_link(out["summary"])
    neo = s[("use-neocloud", "out")]  # neocloud egress only: x2, then 2 %/month
    assert neo["scenario_now_gbps"] == pytest.approx(2 * neo["baseline_now_gbps"], rel=1e-12)
    assert neo["scenario_end_gbps"] == pytest.approx(
        2 * neo["baseline_now_gbps"] * 1.02**12, rel=1e-12
    )
    assert s[("use-migration", "in")]["scenario_now_gbps"] == 0  # all of it moved to CA-East
    assert (
        s[("cae-migration", "in")]["scenario_now_gbps"]
        > s[("cae-migration", "in")]["baseline_now_gbps"]
    )
    ranks = [r["rank"] for r in out["summary"]]
    assert ranks == list(range(1, len(ranks) + 1))
    months = [r["scenario_runout_months"] for r in out["summary"]]
    finite = [m for m in months if m is not None]
    assert finite == sorted(finite) and months[: len(finite)] == finite  # soonest first
    steps = out["steps"]
    assert [s["op"] for s in steps] == ["scale", "shift", "grow"]
    # the text table
    p = run(
        "whatif", str(world["cube"]), "--config", str(world["plan"]), "-s", "neocloud-migration"
    )
    assert p.returncode == 0, p.stderr
    assert "links, soonest run-out first" in p.stdout and "use-neocloud" in p.stdout
    assert "steps, in order" in p.stdout and "understates" in p.stdout
    page = world["root"] / "w.html"
    p = run("whatif", str(world["cube"]), "--config", str(world["plan"]), "-s",
            "neocloud-migration", "--html", str(page))  # fmt: skip
    assert p.returncode == 0, p.stderr
    text = page.read_text()
    assert "Links, soonest run-out first" in text and "use-neocloud" in text
    assert "cdn.bokeh.org" not in text and "Utilisation (p95" in text


def test_shift_and_failure_conserve_traffic_on_a_real_cube(world, tmp_path) -> None:
    sc = tmp_path / "moves.json"
    sc.write_text(
        json.dumps(
            {
                "steps": [
                    {"op": "shift", "share": 40, "from_region": "US-West", "to_region": "US-East"},
                    {"op": "fail", "link": "use-transit",
                     "backups": ["cae-transit", "usw-transit"]},
                    {"op": "shift", "share": 100, "from_link": "use-neocloud",
                     "to_link": "usw-transit"},
                ]
            }
        )
    )  # fmt: skip
    out = whatif_json(world, "--scenario", str(sc), "--percentile", "mean", "--horizon", "2")
    base = sum(r["baseline_now_gbps"] for r in out["summary"])
    scen = sum(r["scenario_now_gbps"] for r in out["summary"])
    assert scen == pytest.approx(base, rel=1e-12)
    s = by_link(out["summary"])
    assert s[("use-transit", "in")]["scenario_now_gbps"] == 0
    assert s[("use-neocloud", "out")]["scenario_now_gbps"] == 0


def test_python_api_matches_the_cli(world) -> None:
    cube = open_cube(world["cube"])
    with pytest.warns(WhatIfWarning, match="understates"):  # 1 h buckets
        r = cube.whatif(example_scenario(), horizon="12m", config=world["plan"])
    cli = by_link(whatif_json(world, "-s", "neocloud-migration")["summary"])
    for row in r.summary.itertuples():
        other = cli[(row.link, row.direction)]["scenario_util_end"]
        assert row.scenario_util_end == pytest.approx(
            math.nan if other is None else other, nan_ok=True
        )
    # a Python scenario, and the cache: the second call reuses the cube's traffic
    sc = Scenario(
        [Shift(50, network_types=["Migration"], from_region="US-East", to_region="CA-East")]
    )
    with pytest.warns(WhatIfWarning):
        assert len(cube.whatif(sc, config=world["plan"]).projection) == len(r.projection)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("scenario", "args", "needles"),
    [
        ('[[steps]]\nop = "scale"\nfactor = 2\nregionz = ["US-East"]\n', [],
         ["s.toml: steps[0]: unknown key 'regionz'"]),
        ('[[steps]]\nop = "scale"\nfactor = 2\nregions = ["US-Central"]\n', [],
         ["s.toml: steps[0].regions[0]: unknown region 'US-Central'"]),
        ('[[steps]]\nop = "scale"\nfactor = 2\nnetwork_types = ["Neoclod"]\n', [],
         ["steps[0].network_types[0]: unknown network type 'Neoclod'"]),
        ('[[steps]]\nop = "fail"\nlink = "nope"\nbackups = ["usw-transit"]\n', [],
         ["steps[0].link: unknown link 'nope'"]),
        ('[[steps]]\nop = "shift"\nshare = 150\nfrom_region = "US-East"\nto_region = "CA-East"\n',
         [], ["steps[0].share: 150.0 is not a percentage from 0 to 100"]),
        ('[[steps]]\nop = "scale"\nfactor = -2\n', [], ["steps[0].factor"]),
        ('horizon = "soon"\n', [], ["s.toml: horizon: 'soon'"]),
        ("", ["--horizon", "12x"], ["--horizon: '12x'"]),
        ("", ["--percentile", "101"], ["--percentile: 101"]),
        ("", ["--threshold", "0"], ["--threshold: 0"]),
        ("", ["--window", "soon"], ["--window: 'soon'"]),
        ('[[steps]\n', [], ["s.toml: invalid TOML"]),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_file_and_key(world, tmp_path, scenario, args, needles):
    sc = tmp_path / "s.toml"
    sc.write_text(scenario)
    p = run("whatif", str(world["cube"]), "--config", str(world["plan"]), "-s", str(sc), *args)
    one_line_error(p, *needles)


def test_bad_capacity_and_a_cube_without_the_configured_links(world, tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(world["plan"].read_text().replace("capacity_gbps = 400", "capacity_gbps = 0"))
    one_line_error(run("whatif", str(world["cube"]), "--config", str(bad)), "capacity_gbps")
    one_line_error(run("whatif", str(tmp_path / "nope")), "no such cube")
    one_line_error(run("whatif", str(world["cube"]), "-s", "no-such-example"), "no-such-example")
    # a cube without the link dimension (as built before it existed) does not measure the
    # interface links its configuration names
    old = tmp_path / "old-cube"
    shutil.copytree(world["cube"], old)
    (old / "links.parquet").unlink()
    one_line_error(
        run("whatif", str(old)), "cube.json: links[0]", "interface link", "rebuild the cube"
    )
    # nor interface links another configuration defines differently
    cfg = tmp_path / "moved.toml"
    cfg.write_text((world["root"] / "archive" / "flowatlas.toml").read_text().replace(
        "501,\n    502,", "503,").replace('path = "prefixes.csv"',
        f'path = "{world["root"]}/archive/prefixes.csv"'))  # fmt: skip
    one_line_error(
        run("whatif", str(world["cube"]), "--config", str(cfg)), "moved.toml: links[", "rebuild"
    )


def test_interface_links_are_measured_and_every_byte_falls_to_one_link(world) -> None:
    """The cube's own configuration: migration fibre as interface links (links.parquet)."""
    cube = open_cube(world["cube"])
    assert (world["cube"] / "links.parquet").exists()
    with pytest.warns(WhatIfWarning):
        r = cube.whatif(None, horizon=1, percentile="mean")
    s = r.summary.set_index(["link", "direction"])
    hours = (cube.cells["bucket_start"].max() - cube.cells["bucket_start"].min()).total_seconds()
    total_gbps = float(cube.cells["bytes"].astype(float).sum()) * 8 / (hours + 3600) / 1e9
    assert s["baseline_now_gbps"].sum() == pytest.approx(total_gbps, rel=1e-12)
    # oracle: each interface link's volume straight from links.parquet
    lc = cube.link_cells()
    for name in [lk.name for lk in cube.links if lk.exporter]:
        mine = lc[lc["link"] == name]
        for side, dirs in (("in", ["ingress", "transit"]), ("out", ["egress"])):
            vol = float(mine[mine["direction"].astype(str).isin(dirs)]["bytes"].astype(float).sum())
            assert s.loc[(name, side), "baseline_now_gbps"] == pytest.approx(
                vol * 8 / (hours + 3600) / 1e9, rel=1e-12
            )
    assert lc["link"].notna().any()


def test_a_plan_reuses_the_builds_address_checks_only_where_it_has_the_same_addresses(
    world, tmp_path, monkeypatch
) -> None:
    """--config with the cube's own regions is not parsed again (that loads the address
    kernels: most of a CLI call); the same configuration results, and new addresses are
    still checked."""
    import flowatlas.config as config
    from flowatlas.config import load_config
    from flowatlas.errors import ConfigError
    from flowatlas.whatif.cubes import cube_config

    built = cube_config(open_cube(world["cube"]))
    plain = load_config(world["plan"])
    checks: list[str] = []
    real = config._validate_addresses
    monkeypatch.setattr(config, "_validate_addresses", lambda c: checks.append(c.origin) or real(c))
    assert load_config(world["plan"], checked=built) == plain and checks == []

    text = world["plan"].read_text()
    prefix = plain.regions[0].prefixes[0]
    moved = tmp_path / "moved.toml"
    moved.write_text(text.replace(f'"{prefix}"', '"10.0.0.300/8"', 1))
    with pytest.raises(ConfigError, match=r"regions\[0\]\.prefixes: row 1"):
        load_config(moved, checked=built)
    assert checks == [str(moved)]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ('[[links]]\nname = "use-neo2"\nregion = "US-East"\ncapacity_gbps = 10\n'
         'select = { network_types = ["Neocloud"] }\n',
         ["plan.toml: links[0] ('use-neocloud') and links[6] ('use-neo2') both select"]),
        ('[[links]]\nname = "x"\nregion = "US-East"\ncapacity_gbps = -10\n'
         'select = { network_types = ["CDN"], directions = ["transit"] }\n',
         ["plan.toml: links[6].capacity_gbps: -10 is not a positive capacity"]),
        ('[[links]]\nname = "x"\nregion = "US-Central"\ncapacity_gbps = 10\n',
         ["plan.toml: links[6].region: unknown region 'US-Central'"]),
        ('[[links]]\nname = "x"\nregion = "US-East"\nspeed = 10\n',
         ["plan.toml: links[6]: unknown key 'speed'"]),
    ],
)  # fmt: skip
def test_a_bad_plan_is_one_line_naming_file_and_key(world, tmp_path, extra, needles) -> None:
    """Overlapping link definitions, capacities and unknown names or keys in --config."""
    plan = tmp_path / "plan.toml"
    plan.write_text(world["plan"].read_text() + extra)
    one_line_error(run("whatif", str(world["cube"]), "--config", str(plan)), *needles)


def test_the_whatif_command_loads_no_kernels_server_or_cluster(world) -> None:
    """`flowatlas whatif` reads a cube: numba (and scipy with it), Bokeh and Dask are for
    builds and the server, and importing them was most of the command's time."""
    import subprocess
    import sys

    argv = ["flowatlas", "whatif", str(world["cube"]), "--config", str(world["plan"]),
            "--scenario", "neocloud-migration", "--json"]  # fmt: skip
    # main(), not `python -m flowatlas`: that ends the process as soon as the command returns
    code = (
        "import sys\nfrom flowatlas.cli import main\n"
        f"status = main({argv[1:]!r})\nassert not status, status\n"
        "print(sorted(m for m in ('numba', 'scipy', 'bokeh', 'dask') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"
