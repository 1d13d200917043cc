"""The shared column converter: what every text importer accepts, and what it quarantines."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowatlas.addresses import format_addresses
from flowatlas.errors import InputError
from flowatlas.io.importers.csv import (
    ColumnConverter,
    parse_port,
    parse_proto,
    parse_time,
    parse_uint,
)
from flowatlas.schema import FLOW_SCHEMA_V1

NOW_US = 1_790_000_000 * 1_000_000  # 2026-09-21


def convert(cols: dict[str, list], **kw) -> tuple[pa.Table, pa.Table]:
    n = len(next(iter(cols.values())))
    conv = ColumnConverter("test.csv", now_us=NOW_US, **kw)
    batch = conv.convert({k: pa.array(v) for k, v in cols.items()}, np.arange(1, n + 1))
    assert batch.records_read == n == batch.table.num_rows + batch.quarantine.num_rows
    return batch.table, batch.quarantine


def base(n: int = 1, **over: list) -> dict[str, list]:
    cols = {
        "time_start": ["2024-03-01T10:00:00Z"] * n,
        "src_addr": ["192.0.2.1"] * n,
        "dst_addr": ["2001:db8::1"] * n,
        "bytes": ["1500"] * n,
        "packets": ["3"] * n,
    }
    cols.update(over)
    return cols


def reasons(q: pa.Table) -> list[str]:
    return q.column("reason").to_pylist()


def test_good_row_has_v1_schema_and_values():
    t, q = convert(base(proto=["TCP"], dst_port=["443"], exporter=["10.0.0.1"]))
    assert q.num_rows == 0
    assert t.schema.equals(FLOW_SCHEMA_V1)
    row = t.to_pylist()[0]
    assert row["bytes"] == 1500 and row["packets"] == 3 and row["proto"] == 6
    assert row["dst_port"] == 443
    assert format_addresses(t["src_addr"]) == ["192.0.2.1"]
    assert format_addresses(t["dst_addr"]) == ["2001:db8::1"]
    assert format_addresses(t["exporter"]) == ["10.0.0.1"]
    assert row["time_end"] == row["time_start"]  # no end time: the start


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-1", "negative_counter"),
        ("18446744073709551616", "counter_overflow"),  # 2^64
        ("99999999999999999999999", "counter_overflow"),
        ("1.5", "bad_counter"),
        ("1e3", "bad_counter"),
        ("abc", "bad_counter"),
        ("", "missing_counter"),
    ],
)
def test_hostile_counters_are_quarantined(value, reason):
    t, q = convert(base(bytes=[value]))
    assert t.num_rows == 0
    assert reasons(q) == [reason]
    assert q.column("position").to_pylist() == ["row 1"]
    assert "bytes" in q.column("detail")[0].as_py()


def test_largest_counter_is_kept():
    t, q = convert(base(bytes=["18446744073709551615"]))
    assert q.num_rows == 0 and t["bytes"][0].as_py() == 2**64 - 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1970-01-01T00:00:00Z", "time_before_1990"),
        ("0", "time_before_1990"),
        ("0000-00-00 00:00:00.000", "time_before_1990"),  # nfdump: time not set
        ("2999-01-01T00:00:00Z", "time_in_future"),
        ("9999-12-31T23:59:59Z", "time_in_future"),
        ("2026-09-23T00:00:00Z", "time_in_future"),  # more than a day after "now"
        ("2024-13-01T00:00:00", "bad_time"),
        ("yesterday", "bad_time"),
        ("", "missing_time"),
    ],
)
def test_hostile_times_are_quarantined(value, reason):
    t, q = convert(base(time_start=[value]))
    assert t.num_rows == 0
    assert reasons(q) == [reason]


def test_time_formats():
    values = [
        "2024-03-01T10:00:00Z",
        "2024-03-01 10:00:00.250",
        "2024-03-01T11:00:00+01:00",
        "1709287200",
        "1709287200000",
        "1709287200000000",
        "1709287200000000000",
        "1709287200.5",
    ]
    us, state = parse_time(pa.array(values))
    assert (state == 0).all()
    base_us = 1_709_287_200 * 1_000_000
    assert us.tolist() == [base_us, base_us + 250_000, base_us] + [base_us] * 4 + [
        base_us + 500_000
    ]
    us2, _ = parse_time(pa.array([1709287200, 1709287200000]))
    assert us2.tolist() == [base_us, base_us]
    us3, _ = parse_time(pa.array(["1709287200"]), unit="ms")
    assert us3.tolist() == [1_709_287_200 * 1000]
    # a date alone is midnight UTC, not a zone offset of "-01"
    us4, st4 = parse_time(pa.array(["2024-03-01", "2024-03-01T10:00:00Z", "2024-03-01 10:00"]))
    assert (st4 == 0).all()
    assert us4.tolist() == [base_us - 36_000_000_000, base_us, base_us]


@pytest.mark.parametrize("bad", ["300.1.1.1", "1.2.3", "::g", "host.example", "010.1.1.1"])
def test_bad_addresses_are_quarantined(bad):
    t, q = convert(base(src_addr=[bad]))
    assert reasons(q) == ["bad_address"] and t.num_rows == 0


def test_missing_address_and_first_failure_wins():
    _, q = convert(base(2, src_addr=["", "1.1.1.1"], bytes=["-1", "-1"]))
    assert reasons(q) == ["missing_address", "negative_counter"]


def test_v4compat_maps_ipv4_compatible_addresses():
    t, _ = convert(base(src_addr=["::138.187.57.3"]), v4compat=True)
    assert format_addresses(t["src_addr"]) == ["138.187.57.3"]
    t, _ = convert(base(src_addr=["::1"]), v4compat=True)
    assert format_addresses(t["src_addr"]) == ["::1"]


def test_ports_protocols_and_ranges():
    v, st_ = parse_port(pa.array(["8.0", "3.3", "65535", "65536", "x"]), icmp_dotted=True)
    assert v[:3].tolist() == [2048, 771, 65535] and st_.tolist() == [0, 0, 0, 4, 3]
    p, sp = parse_proto(pa.array(["tcp", "UDP", "ipv6-icmp", "ICMP6", "47", "256", "bogus"]))
    assert p[:5].tolist() == [6, 17, 58, 58, 47] and sp.tolist()[5:] == [4, 3]
    _, q = convert(base(2, src_port=["70000", "1"], in_if=["1", "-2"], src_as=["1", "4294967296"]))
    assert reasons(q) == ["bad_port", "bad_interface"]


def test_numeric_columns_from_json():
    t, q = convert(
        {
            "time_start": [1_709_287_200_000_000_000, 0, 1_709_287_200],
            "src_addr": ["10.0.0.1"] * 3,
            "dst_addr": ["10.0.0.2"] * 3,
            "bytes": [10, 20, -5],
            "packets": [1.0, 2.0, 3.0],
        }
    )
    assert t.num_rows == 1
    assert reasons(q) == ["time_before_1990", "negative_counter"]


def test_fixed_binary_addresses_pass_through():
    addr = pa.array([b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 1]), None], pa.binary(16))
    conv = ColumnConverter("x", now_us=NOW_US)
    b = conv.convert(
        {
            "time_start": pa.array([1_709_287_200] * 2),
            "src_addr": addr,
            "dst_addr": addr,
            "bytes": pa.array([1, 2]),
        },
        np.array([1, 2]),
    )
    assert format_addresses(b.table["src_addr"]) == ["10.0.0.1"]
    assert reasons(b.quarantine) == ["missing_address"]


def test_required_field_absent_is_an_error():
    with pytest.raises(InputError, match="required"):
        ColumnConverter("x").convert({"src_addr": pa.array(["1.1.1.1"])}, np.array([1]))


def test_parse_uint_edge_cases():
    v, s = parse_uint(pa.array(["007", " 42 ", "+1", "0x10", None]), 2**64 - 1)
    assert v[:2].tolist() == [7, 42] and s.tolist() == [0, 0, 3, 3, 1]
    v, s = parse_uint(pa.array([2.0**64, float("nan"), -0.5]), 2**64 - 1)
    assert s.tolist() == [4, 3, 3]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.text(max_size=30), st.sampled_from(["2024-01-01", "1700000000"])),
            st.one_of(st.text(max_size=20), st.sampled_from(["10.0.0.1", "::1"])),
            st.one_of(st.text(max_size=25), st.integers().map(str)),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_any_text_balances_and_never_raises(rows):
    """Whatever the text, reads balance: written + quarantined = read; no exception."""
    ts, addr, counts = (list(c) for c in zip(*rows, strict=True))
    t, q = convert({"time_start": ts, "src_addr": addr, "dst_addr": addr, "bytes": counts})
    assert t.num_rows + q.num_rows == len(rows)
    assert set(reasons(q)) <= {
        "bad_time",
        "missing_time",
        "time_before_1990",
        "time_in_future",
        "bad_address",
        "missing_address",
        "bad_counter",
        "negative_counter",
        "counter_overflow",
        "missing_counter",
    }
