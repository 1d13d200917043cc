"""One units module for the page, the server and the terminal (flowatlas/viz/units.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowatlas.viz import units


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (0, "volume", "0 B"),
        (999, "volume", "999 B"),
        (1000, "volume", "1 kB"),
        (999.7, "volume", "1 kB"),  # rounds up into the next prefix, never "1e+03 B"
        (999_700, "volume", "1 MB"),
        (8.8e17, "volume", "880 PB"),
        (1.234e12, "volume", "1.23 TB"),
        (1.82e18, "volume", "1.82 EB"),
        (1.47e17, "magnitude", "147 Pb"),
        (2.22e14, "magnitude", "222 Tb"),
        (4e12, "rate", "4 Tbps"),
        (1.5e11, "rate", "150 Gbps"),
        (12_345, "count", "12,345"),
        (2_039_250, "count", "2.04 M"),
        (0.4961, "share", "49.6%"),
        (-3e9, "rate", "-3 Gbps"),
        (float("nan"), "volume", "-"),
        (None, "rate", "-"),
        (0.163, "index", "0.163"),
    ],
)
def test_fmt(value, kind, text) -> None:
    assert units.fmt(value, kind) == text


def test_numpy_scalars_and_points() -> None:
    np = pytest.importorskip("numpy")
    assert units.fmt(np.uint64(8_800_000_000_000_000), "volume") == "8.8 PB"
    assert units.fmt(np.int64(5), "count") == "5"
    assert units.points(0.1342) == "+13.4 pp"
    assert units.points(-0.02) == "-2.0 pp"
    assert units.points(float("nan")) == "-"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown unit kind"):
        units.fmt(1, "furlongs")


@pytest.mark.parametrize(
    ("ticks", "kind", "log", "labels"),
    [
        ([0, 0.5e12, 1e12, 1.5e12], "rate", False, ["0 Tbps", "0.5 Tbps", "1.0 Tbps", "1.5 Tbps"]),
        ([0, 1e12, 2e12, 3e12, 4e12], "rate", False, ["0 Tbps", "1 Tbps", "2 Tbps", "3 Tbps",
                                                      "4 Tbps"]),
        # the colour bar: 2.03925e+6 must read as a count with a unit prefix
        ([2_000_000, 2_020_000, 2_040_000], "count", False, ["2.00 M", "2.02 M", "2.04 M"]),
        ([0, 2_000, 4_000, 6_000], "count", False, ["0", "2 k", "4 k", "6 k"]),
        ([1e3, 1e6, 1e9, 1e12, 1e15], "magnitude", True, ["1 kb", "1 Mb", "1 Gb", "1 Tb", "1 Pb"]),
        ([2e14, 5e14, 1e15], "magnitude", True, ["200 Tb", "500 Tb", "1 Pb"]),
        ([0, 0.1, 0.2, 0.3], "share", False, ["0%", "10%", "20%", "30%"]),
        ([0, 0.025, 0.05], "share", False, ["0.0%", "2.5%", "5.0%"]),
        ([0, 2e-10, 4e-10], "magnitude", False, ["0 b", "0.0000000002 b", "0.0000000004 b"]),
    ],
)  # fmt: skip
def test_tick_labels(ticks, kind, log, labels) -> None:
    assert units.tick_labels(ticks, kind, log) == labels


nice = st.sampled_from([1, 2, 2.5, 5])
exponent = st.integers(min_value=-3, max_value=17)


@settings(max_examples=300, deadline=None)
@given(
    step_m=nice,
    step_e=exponent,
    start=st.integers(min_value=-3, max_value=50),
    n=st.integers(min_value=2, max_value=12),
    kind=st.sampled_from(["volume", "magnitude", "rate", "count", "share"]),
)
def test_linear_ticks_are_distinct_and_plain(step_m, step_e, start, n, kind) -> None:
    """Ticks as Bokeh's BasicTicker makes them: labels differ, no exponents, one unit."""
    step = step_m * 10.0**step_e
    ticks = [(start + i) * step for i in range(n)]
    labels = units.tick_labels(ticks, kind)
    assert len(set(labels)) == len(labels), labels
    assert not any("e+" in x or "e-" in x for x in labels), labels
    if kind != "share":
        assert len({x.split(" ")[-1] for x in labels if " " in x}) <= 1, labels


@settings(max_examples=200, deadline=None)
@given(value=st.floats(min_value=-1e20, max_value=1e20, allow_nan=False),
       kind=st.sampled_from(["volume", "magnitude", "rate", "count"]))  # fmt: skip
def test_fmt_reads_back(value, kind) -> None:
    """The text, read back with its prefix, is the value to 3 significant digits."""
    text = units.fmt(value, kind)
    number, _, unit = text.partition(" ")
    number = float(number.replace(",", ""))
    scale = 1000 ** units.UNITS[kind].index(unit) if unit else 1
    if kind == "count" and not unit:
        assert abs(number - value) <= 0.5
    else:
        assert math.isclose(number * scale, value, rel_tol=5e-3, abs_tol=1e-9), (value, text)
        assert abs(number) < 1000 or unit == units.UNITS[kind][-1]
