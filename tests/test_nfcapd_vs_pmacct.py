"""The nfcapd importer, field by field, against an oracle that is not nfdump: pmacct.

pmacct's own regression tests (flow_exports/pmacct in the shared data) come with the UDP
payloads of real routers and the flows pmacct's nfacctd decoded from them
(``output-flow-00.json``). The same payloads were replayed to nfcapd (``nfcapd_replay/``;
see the data's MANIFEST.md). So every flow the nfcapd importer writes can be checked,
address, port, interface and counter, against what a second, independent collector read
from the same packets. An importer that swapped ``in_if`` and ``out_if``, or source and
destination, fails here, whatever nfdump prints.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from flowatlas.addresses import format_addresses
from flowatlas.io.importers.base import ImportOptions, get_importer
from flowatlas.testing import need_data, need_tools

PMACCT = "flow_exports/pmacct"
#: pmacct test -> how its flows relate to the nfcapd replay
CASES = {
    "100-IPFIXv10-CISCO": "exact",
    "101-NFv9-CISCO-cust_primitives": "exact",
    "102-NFv9-CISCO-f2rd-pretag-sampling-reload": "exact",  # 01.json: the same after reload
    "104-IPFIXv10-IPv6-CISCO-sampling_option": "partial",  # flows without times
    "106-IPFIXv10-HUAWEI-vrf_name": "exact",
    "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources": "partial",  # some flows without times
    "112-IPFIXv10-CISCO-options-map-reassignment": "exact",
    "401-IPFIXv10-BMP-IPv6-CISCO-MPLS-multiple-sources": "aggregated",  # nfacctd aggregates
}
US = 1_000_000


def key(src: str, dst: str, sp: int, dp: int, i: int, o: int, b: int, p: int) -> tuple:
    return (src, dst, sp, dp, i, o, b, p)


def ours(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The importer's rows (addresses as text, times in us) and its quarantine."""
    (path,) = sorted((folder / "nfcapd_replay").glob("nfcapd.2*"))
    batches = list(get_importer("nfcapd")().read(path, ImportOptions()))
    table = pa.concat_tables([b.table for b in batches])
    rows = table.to_pylist()
    for name in ("src_addr", "dst_addr"):
        for row, text in zip(rows, format_addresses(table[name]), strict=True):
            row[name] = text
    for row in rows:
        for name in ("time_start", "time_end"):
            ts = row[name]
            row[name] = int(ts.timestamp()) * US + ts.microsecond
    quarantine = [q for b in batches for q in b.quarantine.to_pylist()]
    assert sum(b.records_read for b in batches) == len(rows) + len(quarantine)
    return rows, quarantine


def theirs(folder: Path) -> list[dict[str, Any]]:
    """pmacct's decoded flows (the first output file: later ones repeat after a reload)."""
    text = (folder / "output-flow-00.json").read_text()
    return [o for o in map(json.loads, filter(str.strip, text.splitlines())) if "ip_src" in o]


def our_key(r: dict[str, Any]) -> tuple:
    return key(r["src_addr"], r["dst_addr"], r["src_port"], r["dst_port"], r["in_if"],
               r["out_if"], r["bytes"], r["packets"])  # fmt: skip


def their_key(o: dict[str, Any]) -> tuple:
    return key(o["ip_src"], o["ip_dst"], o.get("port_src", 0), o.get("port_dst", 0),
               o.get("iface_in", 0), o.get("iface_out", 0), o["bytes"], o["packets"])  # fmt: skip


@pytest.mark.tools
@pytest.mark.shared_data
@pytest.mark.parametrize("case", sorted(CASES))
def test_nfcapd_import_equals_pmacct_field_for_field(case: str) -> None:
    need_tools("nfdump")
    folder = need_data(f"{PMACCT}/{case}/output-flow-00.json") / PMACCT / case
    rows, quarantine = ours(folder)
    flows = theirs(folder)
    mine, other = Counter(map(our_key, rows)), Counter(map(their_key, flows))
    kind = CASES[case]
    if kind == "exact":
        assert not quarantine, quarantine[:3]
        assert mine == other, (mine - other, other - mine)
        # times, where pmacct states them (it rounds to the second). nfdump 1.7.1 stores the
        # uptime-relative times of Huawei's IPFIX (case 106) with start and end swapped, so
        # the two ends are compared as a pair
        unique = {k for k, n in mine.items() if n == 1 and other[k] == 1}
        when = {
            their_key(o): sorted((float(o["timestamp_start"]), float(o["timestamp_end"])))
            for o in flows
            if "timestamp_start" in o
        }
        checked = 0
        for r in rows:
            k = our_key(r)
            if k in unique and k in when:
                got = sorted((r["time_start"] / US, r["time_end"] / US))
                assert all(abs(a - b) <= 1.0 for a, b in zip(got, when[k], strict=True)), k
                checked += 1
        assert checked or not when
    elif kind == "partial":
        assert mine <= other, mine - other  # every flow imported is one pmacct decoded
        assert {q["reason"] for q in quarantine} == {"time_before_1990"}
        assert len(rows) + len(quarantine) >= len(flows)
    else:
        # nfacctd summed flows over primitives it was told to drop, so compare sums. For some
        # MPLS IPFIX records nfdump 1.7.1 stores no addresses (it prints ::, ::) where pmacct
        # decodes them: compare by interfaces and ports, and by address where nfdump has one
        def sums(items, k, with_addresses):
            out: Counter = Counter()
            for item in items:
                kk = k(item)
                where = kk[:6] if with_addresses else kk[2:6]
                out[(*where, "bytes")] += kk[6]
                out[(*where, "packets")] += kk[7]
            return out

        assert not quarantine
        assert sums(rows, our_key, False) == sums(flows, their_key, False)
        have = [r for r in rows if (r["src_addr"], r["dst_addr"]) != ("::", "::")]
        assert len(rows) - len(have) == 176  # of 1464: what this nfcapd file holds
        mine_a, other_a = sums(have, our_key, True), sums(flows, their_key, True)
        assert all(other_a[k] == v for k, v in mine_a.items()), mine_a - other_a
