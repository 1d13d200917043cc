"""`flowatlas import --format netflow-payload --templates --exporter`: raw payload files."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from flowatlas.addresses import format_addresses
from flowatlas.cli import main
from flowatlas.io.commands import import_sources
from flowatlas.testing import need_data

PAYLOADS = "flow_exports/logstash_netflow_payloads"


def test_payload_with_separate_template_file(tmp_path) -> None:
    d = need_data(PAYLOADS) / PAYLOADS
    s = import_sources(
        [d / "netflow9_test_cisco_asa_1_data.dat"],
        tmp_path / "a",
        fmt="netflow-payload",
        exporter="192.0.2.9",
        templates=[d / "netflow9_test_cisco_asa_1_tpl.dat"],
        progress=False,
    )
    assert not s.failed
    rows = pq.read_table(next((tmp_path / "a").rglob("*.parquet")))
    assert rows.num_rows == 14
    assert set(format_addresses(rows.column("exporter"))) == {"192.0.2.9"}


def test_cli_options_are_checked_before_work(tmp_path, capsys) -> None:
    d = need_data(PAYLOADS) / PAYLOADS
    data = str(d / "netflow9_test_cisco_asa_1_data.dat")
    out = str(tmp_path / "a")
    assert main(["import", data, "-f", "netflow-payload", "--exporter", "nope", "-o", out]) == 2
    assert "--exporter: row 1: not an IP address" in capsys.readouterr().err
    rc = main(["import", data, "-f", "netflow-payload", "--templates", "/nonexistent", "-o", out])
    assert rc == 2
    assert "/nonexistent: --templates file not found" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["auto", "netflow-payload"])
def test_cli_imports_payloads(tmp_path, fmt) -> None:
    """Through the CLI, every flow logstash's spec states for this payload reaches the
    archive with its values (addresses, ports, counters, interfaces, times)."""
    from test_netflow_decoder import _CONTEXTS, _expected_flow, _matches, _us

    d = need_data(PAYLOADS) / PAYLOADS
    rc = main(
        [
            "import",
            str(d / "netflow9_test_cisco_asa_1_data.dat"),
            "-f",
            fmt,
            "--templates",
            str(d / "netflow9_test_cisco_asa_1_tpl.dat"),
            "-o",
            str(tmp_path / "a"),
            "-q",
        ]
    )
    assert rc == 0
    table = pq.read_table(next((tmp_path / "a").rglob("*.parquet")))
    rows = table.to_pylist()
    for row, src, dst in zip(
        rows,
        format_addresses(table["src_addr"]),
        format_addresses(table["dst_addr"]),
        strict=True,
    ):
        row["src_addr"], row["dst_addr"] = src, dst
        row["time_start"], row["time_end"] = _us(row["time_start"]), _us(row["time_end"])
    (context,) = [c for c in _CONTEXTS if "netflow9_test_cisco_asa_1_data.dat" in c[1]]
    wants = [w for w in map(_expected_flow, context[3]) if w is not None]
    assert len(rows) == 14 and wants
    for want in wants:
        assert any(_matches(r, want, uptime_times=False) for r in rows), want
