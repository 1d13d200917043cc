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


PMACCTD_CONF = """daemonize: false
pcap_savefile: {pcap}
plugins: print[csv], print[json]
aggregate[csv]: src_host, dst_host, src_port, dst_port, proto, timestamp_start, timestamp_end
aggregate[json]: src_host, dst_host, src_port, dst_port, proto, timestamp_start, timestamp_end
print_output[csv]: csv
print_output[json]: json
print_output_file[csv]: {out}/flows.csv
print_output_file[json]: {out}/flows.json
timestamps_since_epoch[json]: true
timestamps_utc: true
"""


@pytest.mark.tools
@pytest.mark.shared_data
def test_pmacctd_print_plugin_csv_and_json(tmp_path):
    """Real pmacct output (pmacctd on a capture): CSV and JSON import to the same rows."""
    import csv
    import subprocess

    from flowatlas.testing import need_tools

    need_tools("pmacctd")
    root = need_data("pcaps/ndpi/EAQ.pcap")
    conf = tmp_path / "pmacctd.conf"
    conf.write_text(PMACCTD_CONF.format(pcap=root / "pcaps/ndpi/EAQ.pcap", out=tmp_path))
    subprocess.run(["pmacctd", "-f", str(conf)], capture_output=True, timeout=60, check=True)
    with open(tmp_path / "flows.csv", newline="") as fh:
        truth = list(csv.DictReader(fh))
    assert truth
    assert detect_format(tmp_path / "flows.csv") == "pmacct-csv"
    assert detect_format(tmp_path / "flows.json") == "pmacct-json"
    from_csv, q1, n1 = read_all("pmacct-csv", tmp_path / "flows.csv")
    from_json, q2, n2 = read_all("pmacct-json", tmp_path / "flows.json")
    assert n1 == n2 == len(truth) and q1.num_rows == q2.num_rows == 0
    assert pc.sum(from_csv["bytes"]).as_py() == sum(int(r["BYTES"]) for r in truth)
    keys = ["time_start", "src_addr", "dst_addr", "src_port", "dst_port", "proto", "bytes"]
    assert (
        from_csv.select(keys)
        .sort_by([(k, "ascending") for k in keys])
        .equals(from_json.select(keys).sort_by([(k, "ascending") for k in keys]))
    )
