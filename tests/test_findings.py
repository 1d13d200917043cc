"""The seed report's findings, recovered from a built cube (not from the generator's knobs)."""

from __future__ import annotations

import pytest

from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import Cube, open_cube
from flowatlas.synth import synthesize

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


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Cube:
    root = tmp_path_factory.mktemp("findings")
    synthesize(root / "archive", records=150_000, seed=11)
    build_cube(root / "archive", root / "cube", workers=0)
    return open_cube(root / "cube")


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
