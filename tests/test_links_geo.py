"""The cube's link and geography tables against an oracle, on every backend.

A small adversarial archive (several exporters and interfaces, some on links and some not,
an exporter in no region, an IPv6 exporter, IPv6 remotes, internal and transit flows,
sampling 0/1/2/1000, a file of already-scaled counts) is built eagerly, on threads, on
worker processes, with the shuffle on disk and on the GPU path under numba's CUDA
simulator. ``links.parquet`` and ``geo.parquet`` must equal a pandas computation from the
records (orientation by tests/test_build_oracle.py's plain-Python oracle; geography from the
prefix table's lookups) exactly, and be byte for byte the same on every backend.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_build_oracle import (
    PythonOracle,
    World,
    _row,
    _table,
    address_bytes,
    archive_files,
    file_counts,
    to_v6,
)

from flowatlas.addresses import bytes16_to_hilo
from flowatlas.classify import load_table
from flowatlas.config import load_config
from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import open_cube
from flowatlas.testing import run_script

UTC = dt.timezone.utc
DIMS = ["region", "network_type", "direction", "ip_version"]
SUMS = ["bytes", "packets", "flows"]

CONFIG = """
[cube]
bucket = "1h"
rollups = ["day", "all"]

[[regions]]
name = "West"
prefixes = ["198.18.0.0/17", "2001:db8:100::/40"]
exporters = ["10.0.0.1"]

[[regions]]
name = "East"
prefixes = ["198.18.128.0/17", "2001:db8:200::/40"]
exporters = ["10.0.0.2", "2001:db8:ffff::2"]

[[links]]                      # measures only: sets no type
name = "west-transit"
capacity_gbps = 100
exporter = "10.0.0.1"
interfaces = [1, 2]

[[links]]                      # the original form: Migration
exporter = "10.0.0.1"
interfaces = [501, 502]

[[links]]
name = "east-ix"
capacity_gbps = 400
capacity_mode = "shared"
exporter = "2001:db8:ffff::2"
interfaces = [7]
network_type = "CDN"

[[links]]                      # an exporter in no region
name = "stray"
exporter = "10.0.0.3"
interfaces = [7, 101]

[[links]]                      # a selection: assigned on read, not measured
name = "east-neocloud"
region = "East"
capacity_gbps = 10
select = { network_types = ["Neocloud"], directions = ["egress"] }

[classify]
sources = [{ path = "prefixes.csv", format = "prefix-csv", name = "geo" }]
"""

# nested prefixes with countries and metros, some unknown (null) on either
PREFIXES = """prefix,network_type,asn,org,country,metro
20.0.0.0/8,ISP Tier1,64501,Tier One,US,
20.1.0.0/16,Hosting,64502,Host Co,US,Dallas-Houston
20.1.2.0/24,Neocloud,64503,GPU Cloud,US,Chicago
20.1.2.128/25,Neocloud,64504,GPU Cloud East,US,New York
30.0.0.0/8,CDN,64506,Edge,CA,Toronto
40.0.0.0/8,Hyperscaler,64507,Big Cloud,,Northern Virginia
2600::/12,ISP Regional,64511,Regional Six,DE,Frankfurt
2600:1::/32,Neocloud,64512,GPU Six,US,Chicago
2610::/16,Hosting,64513,No Place,,
"""

OURS = ["198.18.0.1", "198.18.100.7", "2001:db8:100::5", "198.18.128.9", "198.18.200.1",
        "2001:db8:200::9"]  # fmt: skip
REMOTES = ["20.0.0.1", "20.1.0.9", "20.1.2.3", "20.1.2.200", "30.1.1.1", "40.2.2.2", "8.8.8.8",
           "2600::1", "2600:1::7", "2610::1", "fe80::1"]  # fmt: skip
EXPORTERS = ["10.0.0.1", "10.0.0.2", "2001:db8:ffff::2", "10.0.0.3", "10.0.0.4"]
INTERFACES = [1, 2, 7, 101, 501, 502, 9]
SAMPLING = [0, 1, 2, 1000]
START = dt.datetime(2025, 10, 30, 20, tzinfo=UTC)

# (exporter, interface) -> link name; and -> network type for links that set one
LINK_OF = {
    **{(address_bytes("10.0.0.1"), i): "west-transit" for i in (1, 2)},
    **{(address_bytes("10.0.0.1"), i): "10.0.0.1:501,502" for i in (501, 502)},
    (address_bytes("2001:db8:ffff::2"), 7): "east-ix",
    **{(address_bytes("10.0.0.3"), i): "stray" for i in (7, 101)},
}
TYPE_OF = {
    **{(address_bytes("10.0.0.1"), i): "Migration" for i in (501, 502)},
    (address_bytes("2001:db8:ffff::2"), 7): "CDN",
}


def write_archive(root: Path, n: int = 1500, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    pool = OURS + REMOTES
    rows = []
    for _ in range(n):
        t = START + dt.timedelta(seconds=int(rng.integers(0, 3 * 86400)))
        rows.append(
            _row(0, t, EXPORTERS[rng.integers(len(EXPORTERS))], pool[rng.integers(len(pool))],
                 pool[rng.integers(len(pool))], INTERFACES[rng.integers(len(INTERFACES))],
                 INTERFACES[rng.integers(len(INTERFACES))], int(rng.integers(1, 2**36)),
                 int(rng.integers(1, 2**20)), SAMPLING[rng.integers(len(SAMPLING))])
        )  # fmt: skip
    by_day: dict[str, list] = {}
    for r in rows:
        by_day.setdefault(r["time_start"].date().isoformat(), []).append(r)
    for day, day_rows in by_day.items():
        (root / f"day={day}").mkdir(parents=True)
        pq.write_table(_table(day_rows, "raw"), root / f"day={day}" / "part-00000.parquet")
    scaled = [
        _row(0, START + dt.timedelta(minutes=i), "10.0.0.1", "20.1.2.3", "198.18.0.1", 1, 9,
             1000 * (i + 1), 1000, 1000)
        for i in range(20)
    ]  # fmt: skip
    day = START.date().isoformat()
    pq.write_table(_table(scaled, "scaled"), root / f"day={day}" / "part-00001.parquet")
    (root / "flowatlas.toml").write_text(CONFIG)
    (root / "prefixes.csv").write_text(PREFIXES)
    return root


def oracle_records(archive: Path) -> pd.DataFrame:
    """Every record oriented and classified by the plain-Python oracle, with the interface
    link carrying it and its remote network's country and metro."""
    cfg = load_config(archive / "flowatlas.toml")
    world = World(
        regions=[(to_v6(p), r.name) for r in cfg.regions for p in r.prefixes],
        exporters={address_bytes(e): r.name for r in cfg.regions for e in r.exporters},
        links=TYPE_OF,
        prefixes=[],
        rollups=("day", "all"),
        v6_prefix=64,
    )
    oracle = PythonOracle(world)
    rows = []
    for path in archive_files(archive):
        counts = file_counts(path)
        for r in pq.read_table(path).to_pylist():
            rec = oracle.record(r, counts)
            ext_if = r["out_if"] if rec["direction"] == "egress" else r["in_if"]
            link = LINK_OF.get((r["exporter"], ext_if))
            rec["link"] = None if rec["direction"] == "internal" else link
            rec["remote_bytes"] = int(rec["remote"]).to_bytes(16, "big")
            rows.append(rec)
    df = pd.DataFrame(rows)
    # network types and geography of the remote end from the prefix table's lookups (the
    # table itself is checked against its sources in tests/test_classify_oracle.py)
    table = load_table(cfg)
    hi, lo = bytes16_to_hilo(np.array(df["remote_bytes"].tolist(), dtype="S16").view(np.uint8)
                             .reshape(-1, 16))  # fmt: skip
    ids = table.lookup(hi, lo)
    nets = table.networks
    for col in ("country", "metro", "network_type"):
        values = np.array([*nets.column(col).to_pylist(), None], dtype=object)
        df[col if col != "network_type" else "prefix_type"] = values[ids]
    # the record oracle knew no prefixes: "Unknown" there is the prefix table's type here
    prefix_type = df["prefix_type"].where(df["prefix_type"].notna(), "Unknown")
    df["network_type"] = df["network_type"].where(df["network_type"] != "Unknown", prefix_type)
    for col in ("bytes", "packets"):
        df[col] = df[col].map(int)
    df["day"] = [pd.Timestamp(t).floor("D") for t in df["bucket_start"]]
    return df


def _grouped(df: pd.DataFrame, keys: list[str]) -> dict:
    out = {}
    for key, g in df.groupby(keys, dropna=False, sort=False):
        key = tuple(None if (isinstance(k, float) and np.isnan(k)) else k for k in key)
        key = tuple(k.to_pydatetime() if isinstance(k, pd.Timestamp) else k for k in key)
        out[key] = (sum(g["bytes"]), sum(g["packets"]), len(g))
    return out


def _file_rows(path: Path, keys: list[str]) -> dict:
    out = {}
    for r in pq.read_table(path).to_pylist():
        key = tuple(r[k] for k in keys)
        assert key not in out, f"{path.name}: {key} twice"
        out[key] = tuple(r[m] for m in SUMS)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("links")
    archive = write_archive(root / "a")
    build_cube(archive, root / "eager", workers=0, partitions=3, partition_rows=400)
    return root, archive, oracle_records(archive)


def test_links_table_equals_oracle(built) -> None:
    root, _archive, rec = built
    keys = ["bucket_start", "link", *DIMS]
    want = _grouped(rec, keys)
    got = _file_rows(root / "eager" / "links.parquet", keys)
    assert got == want
    # the adversarial parts are there: each interface link, no link, IPv6, internal, transit
    links = {k[1] for k in got}
    assert links == {"west-transit", "10.0.0.1:501,502", "east-ix", "stray", None}
    assert {k[4] for k in got} == {"ingress", "egress", "internal", "transit"}
    assert {k[5] for k in got} == {4, 6}
    # summed over the link, the cells exactly
    cells = _file_rows(root / "eager" / "cells.parquet", ["bucket_start", *DIMS])
    summed: dict = {}
    for k, v in got.items():
        key = (k[0], *k[2:])
        summed[key] = tuple(a + b for a, b in zip(summed.get(key, (0, 0, 0)), v, strict=True))
    assert summed == cells
    # sorted: by cell (bucket, then dimension codes), links in configured order, null last
    t = pq.read_table(root / "eager" / "links.parquet")
    assert t.schema.field("link").type == "string"
    assert all(t.schema.field(m).type == "uint64" for m in SUMS)


def test_geo_table_equals_oracle(built) -> None:
    root, _archive, rec = built
    keys = ["day", *DIMS, "country", "metro"]
    want = _grouped(rec, keys)
    got = _file_rows(root / "eager" / "geo.parquet", keys)
    assert got == want
    assert {k[5] for k in got} >= {"US", "CA", "DE", None}
    assert {k[6] for k in got} >= {"Chicago", "New York", "Toronto", None}
    assert any(k[5] is None and k[6] is not None for k in got)  # a metro without a country


def test_cube_reads_links_and_geo(built) -> None:
    root, archive, rec = built
    cube = open_cube(root / "eager")
    cfg = load_config(archive / "flowatlas.toml")
    assert cube.links == cfg.links
    assert cube.link_names[-3:] == ["Unknown/other", "West/other", "East/other"]
    assert cube.links[0].capacity_gbps == 100.0 and cube.links[2].capacity_mode == "shared"
    lc = cube.link_cells()
    assert int(lc["bytes"].sum()) == int(cube.cells["bytes"].sum())
    assigned = cube.link_cells(assign=True)
    assert assigned["link"].notna().all()
    assert set(assigned["link"]) <= set(cube.link_names)
    neo = assigned[assigned["link"] == "east-neocloud"]
    assert len(neo) and (neo["network_type"] == "Neocloud").all()
    assert (neo["direction"] == "egress").all() and (neo["region"] == "East").all()
    # assignment by hand: every row's link, from the record oracle
    r = rec.copy()
    r["assigned"] = [
        "East/other" if d == "internal" and g == "East" else
        f"{g}/other" if d == "internal" else
        lk if not pd.isna(lk) else
        "east-neocloud" if (g, t, d) == ("East", "Neocloud", "egress") else f"{g}/other"
        for lk, g, t, d in zip(r["link"], r["region"], r["network_type"], r["direction"],
                               strict=True)
    ]  # fmt: skip
    want = r.groupby("assigned")["bytes"].sum().map(int).to_dict()
    got = assigned.groupby("link")["bytes"].sum().map(int).to_dict()
    assert got == want


@pytest.mark.parametrize("by", [(), ("network_type",), ("region", "direction")])
def test_top_metros_and_countries_equal_oracle(built, by) -> None:
    root, _archive, rec = built
    cube = open_cube(root / "eager")
    start, end = "2025-10-31", "2025-11-02"
    sel = rec[(rec["day"] >= pd.Timestamp(start, tz="UTC"))
              & (rec["day"] < pd.Timestamp(end, tz="UTC"))]  # fmt: skip
    sel = sel[sel["direction"] != "transit"]
    for level, method in ((["country", "metro"], cube.top_metros),
                          (["country"], cube.top_countries)):  # fmt: skip
        got = method(by=by, where={"direction": ["ingress", "egress", "internal"]},
                     start=start, end=end, n=2)  # fmt: skip
        name = level[-1]
        rows = []
        groups = sel.groupby(list(by)) if by else [((), sel)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            total = sum(g["bytes"])
            known = g[g[name].notna()]
            per = {}
            for vals, h in known.groupby(level, dropna=False):
                vals = vals if isinstance(vals, tuple) else (vals,)
                vals = tuple(None if isinstance(v, float) else v for v in vals)
                per[vals] = sum(h["bytes"])
            ranked = sorted(per.items(), key=lambda kv: (-kv[1], [(v is None, v or "")
                                                                 for v in kv[0]]))  # fmt: skip
            for rank, (vals, b) in enumerate(ranked[:2], start=1):
                rows.append((*key, rank, *vals, b, b / total))
        want_cols = [*by, "rank", *level, "bytes", "share"]
        got_rows = [
            tuple(None if (isinstance(v, float) and np.isnan(v)) else v for v in row)
            for row in got[[*by, "rank", *level, "bytes", "share"]].itertuples(index=False)
        ]
        got_rows = [tuple(int(v) if isinstance(v, np.integer) else v for v in r)
                    for r in got_rows]  # fmt: skip
        assert sorted(got_rows, key=repr) == sorted(rows, key=repr), (want_cols, level)
        assert len(rows) > 0


def test_backends_give_the_same_bytes(built, tmp_path) -> None:
    root, archive, _rec = built
    runs = {
        "threads": dict(workers=2, partitions=2, partition_rows=300),
        "disk": dict(workers=0, partitions=4, partition_rows=500, shuffle="disk"),
        "processes": dict(workers=2, processes=True, partitions=2),
    }
    for name, kw in runs.items():
        build_cube(archive, tmp_path / name, **kw)
        for f in ("links.parquet", "geo.parquet", "cells.parquet", "cube.json"):
            assert (tmp_path / name / f).read_bytes() == (root / "eager" / f).read_bytes(), (
                name, f
            )  # fmt: skip


SIMULATED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from flowatlas.engine.build import build_cube
    sys.path.insert(0, {tests!r})
    from test_links_geo import write_archive
    d = Path({tmp!r})
    write_archive(d / "a", n={n}, seed=11)
    for b in ("cpu", "gpu"):
        build_cube(d / "a", d / b, workers=0, backend=b, partitions=2, partition_rows={rows})
    for name in ("links.parquet", "geo.parquet", "cells.parquet", "cube.json"):
        assert (d / "cpu" / name).read_bytes() == (d / "gpu" / name).read_bytes(), name
    print("SAME")
    """
)


def test_cuda_simulator_gives_the_same_bytes(tmp_path) -> None:
    _same_on_gpu(tmp_path, simulate=True, n=500)


@pytest.mark.gpu
def test_a_gpu_gives_the_same_bytes(tmp_path) -> None:
    _same_on_gpu(tmp_path, simulate=False, n=200_000)


def _same_on_gpu(tmp_path: Path, simulate: bool, n: int) -> None:
    script = SIMULATED.format(
        tests=str(Path(__file__).parent), tmp=str(tmp_path), n=n, rows=max(200, n // 5)
    )
    assert run_script(script, cuda_simulator=simulate).strip().endswith("SAME")


def test_measure_only_links_leave_the_cells_alone(built, tmp_path) -> None:
    """A named link without a type only measures: the cube's other files are the ones a
    configuration without it gives. Without interface links there is no links.parquet, and
    link_cells() is the cells with a null link."""
    _root, archive, _rec = built
    plain = tmp_path / "plain"
    plain.mkdir()
    for p in archive.rglob("*.parquet"):
        (plain / p.relative_to(archive)).parent.mkdir(parents=True, exist_ok=True)
        (plain / p.relative_to(archive)).write_bytes(p.read_bytes())
    (plain / "prefixes.csv").write_text(PREFIXES)
    base = CONFIG.split("[[links]]")[0] + CONFIG[CONFIG.index("[classify]") :]
    (plain / "flowatlas.toml").write_text(base)
    build_cube(plain, tmp_path / "none", workers=0)
    (plain / "flowatlas.toml").write_text(
        base.replace("[classify]", '[[links]]\nname = "m"\nexporter = "10.0.0.1"\n'
                     'interfaces = [1, 2, 501]\n\n[classify]')
    )  # fmt: skip
    build_cube(plain, tmp_path / "measured", workers=0)
    for f in ("cells.parquet", "rollups.parquet", "top_ips.parquet", "geo.parquet"):
        assert (tmp_path / "none" / f).read_bytes() == (tmp_path / "measured" / f).read_bytes()
    assert not (tmp_path / "none" / "links.parquet").exists()
    none = open_cube(tmp_path / "none")
    lc = none.link_cells()
    assert lc["link"].isna().all() and len(lc) == len(none.cells)
    assert (lc["bytes"].to_numpy() == none.cells["bytes"].to_numpy()).all()
    assert set(none.link_cells(assign=True)["link"]) <= {"Unknown/other", "West/other",
                                                          "East/other"}  # fmt: skip
    measured = open_cube(tmp_path / "measured").link_cells()
    assert set(measured["link"].dropna()) == {"m"}
