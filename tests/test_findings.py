"""The seed report's findings, recovered from a built cube (not from the generator's knobs).

Orderings (which cell is largest, which month peaks) and numbers: the seed's own figures
(quarter-over-quarter shares), and the generator's (bytes per region, type and direction
from its baseline rates, trends and weekly cycle), so a cube wrong by a constant factor fails.
"""

from __future__ import annotations

import datetime as dt
from ipaddress import ip_address
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flowatlas.synth as synth
from flowatlas.addresses import bytes16_to_hilo
from flowatlas.classify import build_table
from flowatlas.config import SourceSpec
from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import Cube, open_cube
from flowatlas.io.archive import open_archive
from flowatlas.vocab import CLOUD_TYPES, INTERNAL

ISP = ("ISP Regional", "ISP Tier1")
REPORT_TYPES = (
    "CDN",
    "Hosting",
    "Hyperscaler",
    "ISP Regional",
    "ISP Tier1",
    "Neocloud",
    "Migration",
)
START, DAYS = "2025-07-01", 184  # the demo's half-year: Q3 2025 and Q4 2025
#: the seed's share of all traffic, in percent: previous report (Q3) -> this quarter (Q4)
SEED_SHARES = {"Other clouds": (36.2, 49.6), "Neocloud": (19.8, 18.4), "Hyperscaler": (3.5, 18.0)}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("findings")
    synth.synthesize(root / "archive", records=150_000, start=START, days=DAYS, seed=11)
    build_cube(root / "archive", root / "cube", workers=0)
    return root


@pytest.fixture(scope="module")
def cube(world_dir: Path) -> Cube:
    return open_cube(world_dir / "cube")


def test_us_west_isp_regional_is_the_largest_cell(cube: Cube) -> None:
    vol = cube.matrix("bytes").drop(columns=["Internal"], errors="ignore")
    top = vol.stack().idxmax()
    assert top == ("US-West", "ISP Regional")


def test_us_east_has_the_largest_neocloud_volume(cube: Cube) -> None:
    neo = cube.matrix("bytes")["Neocloud"]
    assert neo.idxmax() == "US-East"
    assert neo["US-East"] > 2 * neo.drop("US-East").max()


def test_neocloud_and_hyperscaler_have_the_highest_magnitude_isps_the_lowest(cube: Cube) -> None:
    mag = cube.rollup(("network_type",)).set_index("network_type")["magnitude"]
    mag = mag.reindex(REPORT_TYPES)
    ranked = list(mag.sort_values(ascending=False).index)
    assert set(ranked[:2]) == {"Neocloud", "Hyperscaler"}, ranked
    assert set(ranked[-2:]) == set(ISP), ranked
    # per region too: in every region the top two and the bottom two are the same types
    m = cube.matrix("magnitude")[list(REPORT_TYPES)]
    for region, row in m.iterrows():
        order = list(row.sort_values(ascending=False).index)
        assert set(order[:2]) == {"Neocloud", "Hyperscaler"}, (region, order)
        assert set(order[-2:]) == set(ISP), (region, order)


def test_us_west_has_the_most_distinct_remote_ips(cube: Cube) -> None:
    u = cube.rollup(("region",)).set_index("region")["uniques"]
    assert u.idxmax() == "US-West"


def test_neocloud_volume_peaks_in_october(cube: Cube) -> None:
    monthly = cube.timeseries(by="network_type", freq="M")["Neocloud"]
    assert monthly.idxmax().month == 10
    # rising from July, and a higher baseline at year end than before the rise
    assert monthly.iloc[0] < monthly.iloc[1] < monthly.iloc[2] < monthly.iloc[3]
    assert monthly.iloc[5] > monthly.iloc[0]


def test_migration_is_concentrated_in_august_to_october(cube: Cube) -> None:
    monthly = cube.timeseries(by="network_type", freq="M")["Migration"]
    aug_oct = monthly[[m.month in (8, 9, 10) for m in monthly.index]].sum()
    assert aug_oct / monthly.sum() > 0.7


def test_neocloud_traffic_has_few_persistent_endpoints(cube: Cube) -> None:
    u = cube.rollup(("network_type",)).set_index("network_type")["uniques"]
    assert u["Neocloud"] < u.drop(["Neocloud", "Migration", "Internal"], errors="ignore").min()
    # and the same endpoints every month
    monthly = cube.rollup(("network_type",), period="month")
    neo = monthly[monthly["network_type"] == "Neocloud"]["uniques"]
    assert neo.max() <= u["Neocloud"] and neo.min() >= 0.6 * u["Neocloud"]


# --------------------------------------------------------------------------- the seed's numbers


def quarterly_shares(cube: Cube) -> pd.DataFrame:
    """Percent of all traffic with other networks (every type but Internal) per quarter and
    type, plus "Other clouds" (the types in CLOUD_TYPES), straight from the cells."""
    cells = cube.cells[cube.cells["network_type"] != INTERNAL]
    quarter = cells["bucket_start"].dt.tz_convert(None).dt.to_period("Q")
    vol = cells.assign(quarter=quarter).pivot_table(
        index="quarter", columns="network_type", values="bytes", aggfunc="sum", observed=True
    )
    vol = vol.fillna(0).astype(float)
    share = 100 * vol.div(vol.sum(axis=1), axis=0)
    share["Other clouds"] = share[list(CLOUD_TYPES)].sum(axis=1)
    return share


def test_quarter_over_quarter_shares_are_the_seeds(cube: Cube) -> None:
    share = quarterly_shares(cube)
    assert list(share.index.astype(str)) == ["2025Q3", "2025Q4"]
    for name, (previous, this) in SEED_SHARES.items():
        assert share.loc["2025Q3", name] == pytest.approx(previous, abs=1.0), name
        assert share.loc["2025Q4", name] == pytest.approx(this, abs=1.0), name
    # the rest of "other clouds" is Hosting, near its norm in both quarters
    assert share.loc["2025Q3", "Hosting"] == pytest.approx(13, abs=1.0)
    assert share.loc["2025Q4", "Hosting"] == pytest.approx(13, abs=1.0)


# --------------------------------------------------------------------------- the generator's


def expected_bytes() -> pd.DataFrame:
    """Bytes per day, region, network type and direction that the generator means to send: its
    baseline Gbps split by egress share, times the type's trend and weekly cycle that day (the
    daily cycle averages 1 over a day), computed here independently of its record sampling."""
    rows = []
    for i in range(DAYS):
        day = np.datetime64(START) + i
        weekday = dt.date.fromisoformat(str(day)).weekday()
        rates = {**synth.BASE_GBPS, INTERNAL: synth.INTERNAL_GBPS}
        for t, base in rates.items():
            f = synth.trend(t, day) * synth.weekly(t, weekday) * 86_400 * 1e9 / 8
            eg = synth.EGRESS_SHARE.get(t)
            split = (("internal", 1.0),) if eg is None else (("ingress", 1 - eg), ("egress", eg))
            for ri, region in enumerate(synth.REGIONS):
                for direction, part in split:
                    rows.append((day, region, t, direction, base[ri] * part * f))
    return pd.DataFrame(rows, columns=["day", "region", "network_type", "direction", "bytes"])


def cube_bytes(cube: Cube, by: list[str]) -> pd.Series:
    cells = cube.cells[cube.cells["direction"] != "transit"]
    cells = cells.assign(month=cells["bucket_start"].dt.tz_convert(None).dt.to_period("M"))
    out = cells.groupby(by, observed=True)["bytes"].sum().astype(float)
    out.index = out.index.map(lambda k: tuple(map(str, k)))
    return out


def test_volume_per_region_type_and_direction_is_the_generators(cube: Cube) -> None:
    by = ["region", "network_type", "direction"]
    want = expected_bytes().groupby(by)["bytes"].sum()
    got = cube_bytes(cube, by)
    assert set(got.index) == set(want.index)
    ratio = got / want.reindex(got.index)
    assert np.allclose(ratio, 1.0, atol=0.01), ratio[np.abs(ratio - 1) > 0.01]


def test_volume_per_month_and_type_is_the_generators(cube: Cube) -> None:
    want = expected_bytes()
    want["month"] = pd.to_datetime(want["day"]).dt.to_period("M")
    want = want.groupby(["month", "network_type"])["bytes"].sum()
    want.index = want.index.map(lambda k: tuple(map(str, k)))
    got = cube_bytes(cube, ["month", "network_type"])
    ratio = got / want.reindex(got.index)
    assert set(got.index) == set(want.index)
    assert np.allclose(ratio, 1.0, atol=0.01), ratio[np.abs(ratio - 1) > 0.01]


def test_cloud_endpoints_are_the_generators_pools(cube: Cube) -> None:
    """Few, persistent endpoints: nearly every address of each region's neocloud and
    hyperscaler pool is seen, and no other."""
    uniques = cube.matrix("uniques")
    for t in ("Neocloud", "Hyperscaler"):
        for ri, region in enumerate(synth.REGIONS):
            size = synth.POOL_SIZE[t][ri]
            assert 0.85 * size <= uniques.loc[region, t] <= size, (t, region)


# --------------------------------------------------------------------------- metros


def remote_bytes_by_place(archive: Path) -> pd.DataFrame:
    """Each record's region (its exporter's), its remote network (classified with the archive's
    own prefix table through the classify API) and its bytes scaled by sampling."""
    table = build_table([SourceSpec(str(archive / "prefixes.csv"), "prefix-csv", "world")])
    nets = table.networks
    types = np.array([*nets.column("network_type").to_pylist(), "Unknown"], dtype=object)
    metros = np.array([*nets.column("metro").to_pylist(), None], dtype=object)
    countries = np.array([*nets.column("country").to_pylist(), None], dtype=object)
    cols = ["exporter", "src_addr", "dst_addr", "bytes", "sampling_rate"]
    t = pa.concat_tables(pq.read_table(f.path, columns=cols) for f in open_archive(archive).files)
    src = table.lookup(*bytes16_to_hilo(t.column("src_addr")))
    dst = table.lookup(*bytes16_to_hilo(t.column("dst_addr")))
    assert not np.any((src >= 0) & (dst >= 0))  # one end is always ours (or unlisted)
    remote = np.where(src >= 0, src, dst)
    scaled = t.column("bytes").to_numpy().astype(float) * t.column("sampling_rate").to_numpy()
    _, exporter = bytes16_to_hilo(t.column("exporter"))
    region_of = {0xFFFF_0000_0000 | int(ip_address(e.address)): e.region for e in synth.EXPORTERS}
    return pd.DataFrame(
        {
            "region": [region_of[int(e)] for e in exporter],
            "network_type": types[remote],
            "country": countries[remote],
            "metro": metros[remote],
            "bytes": scaled,
        }
    )


@pytest.fixture(scope="module")
def places(world_dir: Path) -> pd.DataFrame:
    return remote_bytes_by_place(world_dir / "archive")


def test_archive_classification_agrees_with_the_cube(places: pd.DataFrame, cube: Cube) -> None:
    got = places.groupby("network_type")["bytes"].sum()
    vol = cube.volume(("network_type",)).set_index("network_type")["bytes"].astype(float)
    for t in ("Neocloud", "Hyperscaler", "Hosting", "CDN", "ISP Regional", "ISP Tier1"):
        assert got[t] == pytest.approx(vol[t], rel=1e-6), t


@pytest.mark.parametrize("network_type", ["Neocloud", "Hyperscaler"])
def test_cloud_bytes_cluster_in_the_seeds_metros_skewed_east(
    places: pd.DataFrame, network_type: str
) -> None:
    sel = places[places["network_type"] == network_type]
    share = sel.groupby("metro")["bytes"].sum() / sel["bytes"].sum()
    assert set(share.index) == set(synth.NEOCLOUD_METROS)  # the seed's six, each with bytes
    assert share.idxmax() == "Northern Virginia"
    assert share[list(synth.EAST_COAST_METROS)].sum() > 0.55
    want = pd.Series(synth.CLOUD_METRO_SHARE[network_type], index=synth.NEOCLOUD_METROS)
    assert np.allclose(share.reindex(want.index), want, atol=0.05), pd.concat([share, want], axis=1)
    assert set(sel["country"]) == {"US"}


def test_regional_isps_are_near_each_regions_people(places: pd.DataFrame) -> None:
    isp = places[places["network_type"] == "ISP Regional"]
    assert isp["metro"].notna().all()
    for region, metros in synth.REGION_METROS.items():
        sel = isp[isp["region"] == region]
        near = sel[sel["metro"].isin(metros)]["bytes"].sum() / sel["bytes"].sum()
        assert near > 0.8, region
        canada = sel[sel["country"] == "CA"]["bytes"].sum() / sel["bytes"].sum()
        if region == "CA-East":
            assert 0.4 < canada < 0.95  # partly in Canada
        else:
            assert canada < 0.1, region


def test_cube_top_metros_show_the_seeds_neocloud_metros(cube: Cube, places: pd.DataFrame) -> None:
    """The cube's metro view (geo.parquet, from the prefix table's metros) agrees with the
    archive classified directly, and shows the seed's clustering."""
    top = cube.top_metros(by=["network_type"], where={"network_type": "Neocloud"}, n=10)
    assert set(top["metro"]) == set(synth.NEOCLOUD_METROS)
    assert top.iloc[0]["metro"] == "Northern Virginia" and set(top["country"]) == {"US"}
    neo = places[places["network_type"] == "Neocloud"]
    want = neo.groupby("metro")["bytes"].sum() / neo["bytes"].sum()
    got = top.set_index("metro")["share"]
    assert np.allclose(got.reindex(want.index), want, atol=1e-6)
    assert got[list(synth.EAST_COAST_METROS)].sum() > 0.55
