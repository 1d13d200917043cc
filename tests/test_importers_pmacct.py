"""pmacct JSON (real nfacctd output) and print plugin CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flowatlas.addresses import format_addresses
from flowatlas.errors import ConfigError
from flowatlas.io.importers.base import ImportOptions, detect_format, get_importer
from flowatlas.testing import need_data

NOW_US = 1_790_000_000 * 1_000_000


def read_all(fmt: str, path: Path, **extra) -> tuple[pa.Table, pa.Table, int]:
    opts = ImportOptions(extra=tuple({"now_us": NOW_US, **extra}.items()))
    batches = list(get_importer(fmt)().read(path, opts))
    table = pa.concat_tables([b.table for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    read = sum(b.records_read for b in batches)
    assert read == table.num_rows + quarantine.num_rows
    return table, quarantine, read


@pytest.mark.shared_data
def test_real_nfacctd_json_matches_its_own_totals():
    """pmacct's expected output (tests/*/output-flow-*.json): every record accounted for."""
    root = need_data("flow_exports/pmacct")
    files = sorted((root / "flow_exports/pmacct").glob("*/output-flow-*.json"))
    assert files
    for f in files:
        assert detect_format(f) == "pmacct-json", f
        records = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        table, quarantine, read = read_all("pmacct-json", f)
        assert read == len(records), f
        timed = [r for r in records if r.get("timestamp_start")]
        assert table.num_rows == len(timed), f
        # records without any time primitive are quarantined, not dropped
        assert set(quarantine["reason"].to_pylist()) <= {"missing_time"}, f
        if timed:
            assert pc.sum(table["bytes"]).as_py() == sum(r["bytes"] for r in timed), f
            assert sorted(format_addresses(table["src_addr"])) == sorted(
                r["ip_src"] for r in timed
            ), f


@pytest.mark.shared_data
def test_huawei_ipfix_fields():
    root = need_data("flow_exports/pmacct/106-IPFIXv10-HUAWEI-vrf_name")
    f = root / "flow_exports/pmacct/106-IPFIXv10-HUAWEI-vrf_name/output-flow-00.json"
    table, _, _ = read_all("pmacct-json", f)
    row = table.to_pylist()[0]
    assert format_addresses(table["exporter"])[0] == "fd25::101"
    assert (row["in_if"], row["out_if"], row["proto"], row["bytes"]) == (10, 65, 17, 142216)
    assert row["time_start"].timestamp() == 1737989246
    assert row["time_end"].timestamp() == 1737989307


def test_print_plugin_csv(tmp_path):
    f = tmp_path / "pmacct.csv"
    f.write_text(
        "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,TIMESTAMP_START,TIMESTAMP_END,"
        "PEER_SRC_IP,SAMPLING_RATE,PACKETS,FLOWS,BYTES\n"
        "192.0.2.1,198.51.100.2,443,50000,tcp,2024-06-01 10:00:00.000000,"
        "2024-06-01 10:00:03.000000,10.0.0.1,100,3,1,4500\n"
        "192.0.2.1,198.51.100.2,443,50000,ipv6-icmp,0000-00-00 00:00:00.000000,"
        "0000-00-00 00:00:00.000000,10.0.0.1,100,3,1,4500\n"
        "192.0.2.1,198.51.100.2,443,50000,tcp,1717236000.500000,0,10.0.0.1,100,3,1,-4\n"
    )
    assert detect_format(f) == "pmacct-csv"
    table, quarantine, read = read_all("pmacct-csv", f)
    assert read == 3 and table.num_rows == 1
    assert quarantine["reason"].to_pylist() == ["missing_time", "negative_counter"]
    row = table.to_pylist()[0]
    assert (row["sampling_rate"], row["proto"], row["dst_port"]) == (100, 6, 50000)
    assert (row["time_end"] - row["time_start"]).total_seconds() == 3


def test_counts_option(tmp_path):
    imp = get_importer("pmacct-json")()
    assert imp.counts_for(ImportOptions()) == "raw"
    assert imp.counts_for(ImportOptions(extra=(("counts", "scaled"),))) == "scaled"
    with pytest.raises(ConfigError):
        imp.counts_for(ImportOptions(extra=(("counts", "both"),)))
