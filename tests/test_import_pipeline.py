"""Acceptance: real packets -> softflowd (IPFIX) -> nfcapd -> ``flowatlas import`` -> archive.

Per remote IP, the archive's bytes, packets and flows equal nfdump's own statistics of the
same nfcapd file (``nfdump -s srcip/bytes`` and ``-s dstip/bytes`` with a direction filter,
and ``-s ip/bytes`` over all addresses).

:func:`capture_to_nfcapd` is the reusable part: the engine's end-to-end test (``flowatlas
build`` on such an archive) can import it from here.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowatlas.addresses import format_addresses
from flowatlas.cli import main
from flowatlas.io.archive import open_archive
from flowatlas.io.importers.nfdump import nfdump_binary, stats_by_ip
from flowatlas.testing import need_data, need_tools

#: (capture under shared data, our side of it as a CIDR prefix)
CAPTURES = [
    ("pcaps/ndpi/EAQ.pcap", "10.8.0.0/24"),
    ("pcaps/ndpi/http_ipv6.pcap", "2a00:d40:1:3::/64"),
]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


@contextlib.contextmanager
def nfcapd_collector(workdir: Path) -> Iterator[tuple[Path, int]]:
    """A real nfcapd listening on 127.0.0.1: yields (its folder, its UDP port).

    On leaving, nfcapd is stopped (SIGTERM flushes its file) and the one file it wrote is
    left in the folder (:func:`collected_file` finds it).
    """
    flowdir = workdir / "flows"
    flowdir.mkdir(parents=True, exist_ok=True)
    port = _free_udp_port()
    with open(workdir / "nfcapd.log", "wb") as log:
        collector = subprocess.Popen(
            ["nfcapd", "-w", str(flowdir), "-p", str(port), "-b", "127.0.0.1", "-t", "86400"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not _udp_port_taken(port):
                if collector.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nfcapd did not start: {(workdir / 'nfcapd.log').read_text()}"
                    )
                time.sleep(0.05)
            yield flowdir, port
            time.sleep(0.5)  # let nfcapd take the last datagrams off the socket
        finally:
            collector.terminate()
            try:
                collector.wait(timeout=20)
            except subprocess.TimeoutExpired:
                collector.kill()
                collector.wait()


def collected_file(flowdir: Path) -> Path:
    """The one nfcapd file a stopped collector left in ``flowdir``."""
    files = sorted(p for p in flowdir.glob("nfcapd.*") if "current" not in p.name)
    if len(files) != 1:
        raise RuntimeError(f"expected one nfcapd file in {flowdir}, found {files}")
    return files[0]


def capture_to_nfcapd(pcap: Path, workdir: Path, *, timeout: float = 60.0) -> Path:
    """Turn a packet capture into an nfcapd file the way a real collector would.

    softflowd reads ``pcap`` and exports IPFIX with absolute millisecond times (``-v 10 -A
    milli``; ``-c none`` because Debian's softflowd 1.1.0 otherwise blocks on ``-r``) to an
    nfcapd listening on 127.0.0.1; nfcapd is then stopped (SIGTERM flushes its file). Returns
    the nfcapd file. Needs the softflowd and nfdump (nfcapd) Debian packages.
    """
    with nfcapd_collector(workdir) as (flowdir, port):
        exporter = subprocess.run(
            ["softflowd", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", "10", "-A", "milli",
             "-6", "-d", "-c", "none", "-p", str(workdir / "softflowd.pid")],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
        if exporter.returncode != 0:
            raise RuntimeError(f"softflowd failed: {exporter.stderr.decode(errors='replace')}")
    return collected_file(flowdir)


def _canonical(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    return "0.0.0.0" if int(addr) == 0 else str(addr)  # nfdump prints :: as 0.0.0.0


def remote_ip_stats(table: pa.Table, local: str) -> dict[str, tuple[int, int, int]]:
    """(flows, packets, bytes) per remote IP: the end of each flow outside ``local``."""
    net = ipaddress.ip_network(local)
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    src = format_addresses(table["src_addr"])
    dst = format_addresses(table["dst_addr"])
    for s, d, p, b in zip(
        src, dst, table["packets"].to_pylist(), table["bytes"].to_pylist(), strict=True
    ):
        s_local = ipaddress.ip_address(s) in net
        d_local = ipaddress.ip_address(d) in net
        for ip, is_remote in ((s, not s_local and d_local), (d, not d_local and s_local)):
            if is_remote:
                acc = out[_canonical(ip)]
                acc[0] += 1
                acc[1] += p
                acc[2] += b
    return {ip: tuple(v) for ip, v in out.items()}


def nfdump_remote_ip_stats(binary: str, path: Path, local: str) -> dict[str, tuple[int, int, int]]:
    """nfdump's view of the same: sources of inbound flows plus destinations of outbound ones."""
    merged: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for element, flt in (
        ("srcip", f"dst net {local} and not src net {local}"),
        ("dstip", f"src net {local} and not dst net {local}"),
    ):
        for ip, v in stats_by_ip(binary, path, element, flt).items():
            acc = merged[_canonical(ip)]
            for i in range(3):
                acc[i] += v[i]
    return {ip: tuple(v) for ip, v in merged.items()}


@pytest.mark.tools
@pytest.mark.shared_data
@pytest.mark.parametrize(("capture", "local"), CAPTURES, ids=[Path(c).name for c, _ in CAPTURES])
def test_capture_softflowd_nfcapd_import_matches_nfdump(tmp_path, capsys, capture, local):
    need_tools("softflowd", "nfcapd", "nfdump")
    root = need_data(capture)
    nfcapd_file = capture_to_nfcapd(root / capture, tmp_path)
    out = tmp_path / "archive"
    cfg = tmp_path / "flowatlas.toml"
    cfg.write_text(f'[[regions]]\nname = "US-East"\nprefixes = ["{local}"]\n')
    assert main(["import", str(nfcapd_file), "--out", str(out), "--config", str(cfg)]) == 0
    summary = capsys.readouterr().out
    assert "quarantined 0" in summary

    archive = open_archive(out)
    assert {f.counts for f in archive.files} == {"scaled"}
    table = pq.read_table(out, columns=["src_addr", "dst_addr", "packets", "bytes"])
    binary = nfdump_binary()
    want = nfdump_remote_ip_stats(binary, nfcapd_file, local)
    got = remote_ip_stats(table, local)
    assert got == want and len(got) > 3
    # and over every address, as nfdump -s ip counts them
    every: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for col in ("src_addr", "dst_addr"):
        for ip, p, b in zip(
            format_addresses(table[col]),
            table["packets"].to_pylist(),
            table["bytes"].to_pylist(),
            strict=True,
        ):
            acc = every[_canonical(ip)]
            acc[0] += 1
            acc[1] += p
            acc[2] += b
    all_want = {_canonical(ip): v for ip, v in stats_by_ip(binary, nfcapd_file).items()}
    assert {ip: tuple(v) for ip, v in every.items()} == all_want
    # records touching none of our prefixes are counted in the summary (none here)
    written = archive.num_rows
    assert f"0 of {written:,} written records touch none of the 1 configured" in summary


@pytest.mark.tools
def test_capture_helper_reports_a_broken_capture(tmp_path):
    need_tools("softflowd", "nfcapd")
    bogus = tmp_path / "not-a.pcap"
    bogus.write_bytes(b"no packets here")
    with pytest.raises(RuntimeError, match="softflowd failed"):
        capture_to_nfcapd(bogus, tmp_path, timeout=20)
