"""Address conversions against Python's ipaddress module (the obvious reference)."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowatlas.addresses import (
    AddressError,
    bytes16_to_hilo,
    format_addresses,
    hilo_to_bytes16,
    hilo_to_text,
    is_v4,
    parse_addresses,
    parse_prefixes,
    prefix_bounds,
    text_to_bytes16,
)


def reference_int(text: str) -> int:
    a = ipaddress.ip_address(text.strip())
    if a.version == 4:
        return 0xFFFF_0000_0000 | int(a)
    return int(a)


def reference_text(value: int) -> str:
    a = ipaddress.IPv6Address(value)
    return str(a.ipv4_mapped) if a.ipv4_mapped is not None else str(a)


def random_u128(rng: np.random.Generator) -> int:
    hi, lo = rng.integers(0, 2**64, size=2, dtype=np.uint64)
    return (int(hi) << 64) | int(lo)


def random_addresses(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            out.append(str(ipaddress.IPv4Address(int(rng.integers(0, 2**32)))))
        elif r < 0.7:
            v = random_u128(rng)
            out.append(str(ipaddress.IPv6Address(v)))
        elif r < 0.85:  # many zero groups, to exercise '::' placement
            groups = [int(rng.integers(0, 2**16)) if rng.random() < 0.4 else 0 for _ in range(8)]
            out.append(
                str(ipaddress.IPv6Address(sum(g << (16 * (7 - i)) for i, g in enumerate(groups))))
            )
        else:  # exploded, upper case and embedded-IPv4 spellings
            v = random_u128(rng)
            a = ipaddress.IPv6Address(v)
            out.append(
                a.exploded.upper()
                if rng.random() < 0.5
                else f"::ffff:{ipaddress.IPv4Address(v & 0xFFFFFFFF)}"
            )
    return out


def test_parse_and_format_match_ipaddress_on_random_inputs() -> None:
    rng = np.random.default_rng(42)
    texts = random_addresses(rng, 20_000)
    hi, lo, ok = parse_addresses(texts)
    assert ok.all()
    got = [(int(h) << 64) | int(lw) for h, lw in zip(hi, lo, strict=True)]
    assert got == [reference_int(t) for t in texts]
    assert hilo_to_text(hi, lo).to_pylist() == [reference_text(v) for v in got]


ADVERSARIAL_GOOD = [
    "0.0.0.0",
    "255.255.255.255",
    "::",
    "::1",
    "1::",
    "::ffff:0.0.0.0",
    "::ffff:255.255.255.255",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "1:0:0:1:0:0:0:1",
    "1:0:0:0:1:0:0:0",
    "0:0:1::",
    "::0:1:0:0:0:0",
    "2001:db8::192.0.2.1",
    "64:ff9b::1.2.3.4",
    " 10.1.2.3\t",
    "FE80::1",
]
ADVERSARIAL_BAD = [
    "",
    "1.2.3",
    "1.2.3.4.5",
    "256.1.1.1",
    "01.2.3.4",
    "1.2.3.4/24",
    ":",
    ":::",
    "1:2:3:4:5:6:7:8:9",
    "1::2::3",
    "12345::",
    "g::",
    "1:2:3:4:5:6:7:",
    ":1:2:3:4:5:6:7",
    "::1.2.3",
    "1:2:3:4:5:6:7:1.2.3.4",
    "fe80::1%eth0",
    "x" * 60,
]


@pytest.mark.parametrize("text", ADVERSARIAL_GOOD)
def test_adversarial_valid_addresses(text: str) -> None:
    hi, lo, ok = parse_addresses([text])
    assert ok[0]
    assert (int(hi[0]) << 64) | int(lo[0]) == reference_int(text)


@pytest.mark.parametrize("text", ADVERSARIAL_BAD)
def test_adversarial_invalid_addresses(text: str) -> None:
    _, _, ok = parse_addresses([text], strict=False)
    assert not ok[0]


def test_strict_error_names_source_and_row() -> None:
    with pytest.raises(AddressError, match=r"flows\.csv: row 3: not an IP address: 'nope'"):
        parse_addresses(["1.2.3.4", "::1", "nope"], source="flows.csv")


def test_nulls_are_invalid_not_silent() -> None:
    _, _, ok = parse_addresses(pa.array(["1.2.3.4", None]), strict=False)
    assert ok.tolist() == [True, False]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_bytes16_hilo_text_roundtrip(value: int) -> None:
    hi = np.array([value >> 64], np.uint64)
    lo = np.array([value & (2**64 - 1)], np.uint64)
    b16 = hilo_to_bytes16(hi, lo)
    assert b16[0].as_py() == value.to_bytes(16, "big")
    h2, l2 = bytes16_to_hilo(b16)
    assert (h2[0], l2[0]) == (hi[0], lo[0])
    text = hilo_to_text(hi, lo)[0].as_py()
    assert text == reference_text(value)
    assert format_addresses(b16) == [text]
    h3, l3, _ = parse_addresses([text])
    assert (h3[0], l3[0]) == (hi[0], lo[0])


def test_is_v4_and_sliced_arrays() -> None:
    arr = text_to_bytes16(["1.2.3.4", "::1", "::ffff:0:1", "2001:db8::"])
    hi, lo = bytes16_to_hilo(arr.slice(1, 3))
    assert is_v4(hi, lo).tolist() == [False, True, False]


def test_prefixes_against_ipaddress() -> None:
    texts = [
        "10.0.0.0/8",
        "0.0.0.0/0",
        "::/0",
        "2001:db8::/32",
        "1.2.3.4",
        "1.2.3.4/32",
        "::ffff:0:0/96",
        "2001:db8::1/128",
    ]
    hi, lo, length, ok = parse_prefixes(texts)
    assert ok.all()
    s_hi, s_lo, e_hi, e_lo = prefix_bounds(hi, lo, length)
    for i, t in enumerate(texts):
        net = ipaddress.ip_network(t)
        if net.version == 4:
            first = 0xFFFF_0000_0000 | int(net.network_address)
            last = 0xFFFF_0000_0000 | int(net.broadcast_address)
            assert length[i] == net.prefixlen + 96
        else:
            first, last = int(net.network_address), int(net.broadcast_address)
            assert length[i] == net.prefixlen
        assert (int(s_hi[i]) << 64) | int(s_lo[i]) == first
        assert (int(e_hi[i]) << 64) | int(e_lo[i]) == last


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("10.0.0.0/33", "not a CIDR prefix"),
        ("2001:db8::/129", "not a CIDR prefix"),
        ("10.0.0.0/x", "not a CIDR prefix"),
        ("banana/8", "not a CIDR prefix"),
        ("10.0.0.0/-1", "not a CIDR prefix"),
    ],
)
def test_bad_prefixes_name_the_row(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=rf"list\.txt: row 2: {why}"):
        parse_prefixes(["192.0.2.0/24", text], source="list.txt")


UNCOMPILED = """
import ipaddress, json, sys
import numpy as np
from flowatlas.addresses import parse_addresses
good, bad = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rng = np.random.default_rng(7)
texts = good + [str(ipaddress.ip_address(int(v))) for v in rng.integers(0, 2**32, 300)]
hi, lo, ok = parse_addresses(texts)
assert ok.all(), [t for t, k in zip(texts, ok) if not k]
for t, h, lw in zip(texts, hi, lo):
    a = ipaddress.ip_address(t.strip())
    want = int(a) if a.version == 6 else 0xFFFF00000000 | int(a)
    assert (int(h) << 64) | int(lw) == want, t
assert not parse_addresses(bad, strict=False)[2].any()
"""


def test_the_parser_is_right_uncompiled_too() -> None:
    """With NUMBA_DISABLE_JIT the kernels run as plain Python on NumPy scalars. A character
    read as uint8 once made the arithmetic wrap: an IPv6 group of three or four hex digits
    lost its high bits, and the octet 256 read as 0 (accepted)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    args = [json.dumps(ADVERSARIAL_GOOD), json.dumps(ADVERSARIAL_BAD)]
    r = subprocess.run(
        [sys.executable, "-c", UNCOMPILED, *args], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
