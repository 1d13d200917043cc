"""nfcapd files, read natively or through nfdump's own tools, and the CSV text nfdump prints.

``--format nfcapd`` reads nfcapd files with the native reader (:mod:`flowatlas.io.nfcapd`,
numba over whole blocks, no nfdump needed). A file it does not read (nfdump 1.6's layout,
encrypted files) is read through nfdump instead, and the reason is printed. ``--reader nfdump``
(option ``reader``) reads every file through nfdump, as flowatlas did before: it runs
``nfdump -r FILE`` and streams what it prints (never the whole file in memory) into flow
schema v1. Both give the same archive, field for field; the tests check that on every nfcapd
file of the shared data, against nfdump's own output parsed by the tests.

nfdump's text output changed with 1.7.5: ``-o csv`` went from a fixed 48-column layout
(``ts,te,td,sa,da,...``, times without milliseconds) to a user-defined one whose header names
the fields (``firstSeen,duration,proto,srcAddr,...``). So the command depends on the version
``nfdump -V`` reports:

- before 1.7.5: ``-o fmt:%ts,%te,...`` with ``-6`` (full IPv6 addresses) and ``-N`` (plain
  numbers, protocol numbers). ``%ter`` is avoided: 1.7.1 prints its milliseconds wrongly.
- 1.7.5 and later: ``-o csv:%ts,%te,...``, whose header line is skipped (it is printed even
  with ``-q`` in 1.7.5).

nfdump prints times in local time, so it always runs with ``TZ=UTC``. Counts are already
multiplied by the sampling rate (nfcapd scales them), so archive files say
``flowatlas.counts = scaled`` and ``sampling_rate`` is 0. nfdump 1.7.1 prints some NetFlow v9
IPv4 addresses as IPv4-compatible IPv6 (``::138.187.1.2``); they are stored as IPv4.

``--format nfdump-csv`` reads text files made by ``nfdump -o csv`` (either layout, gzip or
not), for archives kept as text.
"""

from __future__ import annotations

import functools
import io
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from flowatlas.errors import ConfigError, InputError
from flowatlas.io.importers.base import Batch, Importer, ImportOptions, register
from flowatlas.io.importers.csv import (
    BatchAccumulator,
    ColumnConverter,
    CsvRowReader,
    csv_header,
    first_line,
    invalid_lines_quarantine,
    open_text_stream,
)
from flowatlas.schema import COUNTS_SCALED

NFDUMP_MAGIC = b"\x0c\xa5"  # 0xA50C, little endian, at the start of every nfcapd file
#: nfdump may loop forever on a corrupt file: it is stopped after this many seconds, plus
#: one second per NFDUMP_BYTES_PER_SECOND of file (a tenth of its slowest speed here)
NFDUMP_MIN_SECONDS = 60.0
NFDUMP_BYTES_PER_SECOND = 2 << 20
#: nfdump versions from which ``-o csv:<tokens>`` exists (and ``-o csv`` changed layout)
CSV_TOKENS_SINCE = (1, 7, 5)

#: (v1 field, nfdump output token) in the order we ask nfdump to print them
FIELDS: tuple[tuple[str, str], ...] = (
    ("time_start", "%ts"),
    ("time_end", "%te"),
    ("exporter", "%ra"),
    ("in_if", "%in"),
    ("out_if", "%out"),
    ("src_addr", "%sa"),
    ("dst_addr", "%da"),
    ("src_port", "%sp"),
    ("dst_port", "%dp"),
    ("proto", "%pr"),
    ("bytes", "%ibyt"),
    ("packets", "%ipkt"),
    ("src_as", "%sas"),
    ("dst_as", "%das"),
)

#: header names of nfdump's CSV output, both layouts, to v1 fields
CSV_HEADER_FIELDS: dict[str, str] = {
    # nfdump <= 1.7.4: -o csv
    "ts": "time_start",
    "te": "time_end",
    "sa": "src_addr",
    "da": "dst_addr",
    "sp": "src_port",
    "dp": "dst_port",
    "pr": "proto",
    "ipkt": "packets",
    "ibyt": "bytes",
    "in": "in_if",
    "out": "out_if",
    "sas": "src_as",
    "das": "dst_as",
    "ra": "exporter",
    # nfdump >= 1.7.5: -o csv and -o csv:<tokens>
    "firstSeen": "time_start",
    "lastSeen": "time_end",
    "duration": "duration",
    "srcAddr": "src_addr",
    "dstAddr": "dst_addr",
    "srcPort": "src_port",
    "dstPort": "dst_port",
    "proto": "proto",
    "packets": "packets",
    "inPackets": "packets",
    "bytes": "bytes",
    "inBytes": "bytes",
    "input": "in_if",
    "output": "out_if",
    "srcAS": "src_as",
    "dstAS": "dst_as",
    "routerIP": "exporter",
}

#: nfdump's protocol abbreviations where they differ from the IANA keywords (IPIP is 4 here)
NFDUMP_PROTOCOLS: dict[str, int] = {
    "ipip": 4,
    "nvpii": 11,
    "encom": 14,
    "dcn": 19,
    "xns": 22,
    "trnk1": 23,
    "trnk2": 24,
    "leaf1": 25,
    "leaf2": 26,
    "irtp": 28,
    "iso-4": 29,
    "netbk": 30,
    "mfesp": 31,
    "meinp": 32,
    "3pc": 34,
    "tp++": 39,
    "il": 40,
    "sdrp": 42,
    "mhrp": 48,
    "bna": 49,
    "inlsp": 52,
    "swipe": 53,
    "narp": 54,
    "mobil": 55,
    "tlsp": 56,
    "host": 61,
    "cftp": 62,
    "net": 63,
    "satnt": 64,
    "klan": 65,
    "rvd": 66,
    "ippc": 67,
    "fs": 68,
    "satm": 69,
    "visa": 70,
    "ipcv": 71,
    "cpnx": 72,
    "cphb": 73,
    "wsn": 74,
    "pvp": 75,
    "bsatm": 76,
    "sunnd": 77,
    "wbmon": 78,
    "wbexp": 79,
    "isoip": 80,
    "svmtp": 82,
    "vines": 83,
    "ttp": 84,
    "nsigp": 85,
    "dgp": 86,
    "tcf": 87,
    "s-rpc": 90,
    "larp": 91,
    "mtp": 92,
    "os": 94,
    "micp": 95,
    "sccsp": 96,
    "ethip": 97,
    "gmtp": 100,
    "ifmp": 101,
    "pnni": 102,
    "aris": 104,
    "scps": 105,
    "qnx": 106,
    "a/n": 107,
    "ipcmp": 108,
    "snp": 109,
    "cpqpp": 110,
    "ipxip": 111,
    "0hop": 114,
    "ddx": 116,
    "iatp": 117,
    "stp": 118,
    "srp": 119,
    "uti": 120,
    "smp": 121,
    "sm": 122,
    "ptp": 123,
    "isis4": 124,
    "fire": 125,
    "crtp": 126,
    "crudp": 127,
    "iplt": 129,
    "sps": 130,
    "pipe": 131,
    "mhead": 135,
}

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_NO_FLOWS = "No matching flows"
#: ``--reader`` values: the native reader (default) or nfdump's text output
READERS = ("native", "nfdump")


class NfdumpMissing(InputError):
    """nfdump is not installed."""


def nfdump_binary(options: ImportOptions | None = None) -> str:
    """The nfdump executable (``--nfdump PATH`` or ``nfdump`` on PATH); a clear error if absent."""
    name = (options.get("nfdump") if options else None) or "nfdump"
    found = shutil.which(name)
    if found is None:
        raise NfdumpMissing(
            f"{name}: not found; nfcapd files are read with nfdump: "
            "install the Debian package nfdump (apt-get install nfdump)"
        )
    return found


@functools.lru_cache(maxsize=8)
def nfdump_version(binary: str) -> tuple[int, int, int]:
    """The version ``nfdump -V`` reports, e.g. (1, 7, 1)."""
    try:
        out = subprocess.run(
            [binary, "-V"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"{binary}: cannot run nfdump -V: {exc}") from None
    m = _VERSION.search(out.stdout + out.stderr)
    if not m:
        raise InputError(f"{binary}: cannot tell the nfdump version from {out.stdout!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def nfdump_command(binary: str, path: Path, version: tuple[int, int, int], layout: str = "auto"):
    """The nfdump command line for ``path``, and the layout ("fmt" or "csv") it prints."""
    if layout == "auto":
        layout = "csv" if version >= CSV_TOKENS_SINCE else "fmt"
    tokens = ",".join(tok for _, tok in FIELDS)
    mode = f"csv:{tokens}" if layout == "csv" else f"fmt:{tokens}"
    return [binary, "-q", "-N", "-6", "-r", str(path), "-o", mode], layout


def nfdump_env() -> dict[str, str]:
    """The environment nfdump runs in: UTC times, C locale."""
    env = dict(os.environ)
    env["TZ"] = "UTC"
    env["LC_ALL"] = "C"
    return env


class _Prepend(io.RawIOBase):
    """A readable stream that yields ``prefix`` and then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: Any) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read1(len(buf)) if hasattr(self._stream, "read1") else b""
        if not data and not hasattr(self._stream, "read1"):
            data = self._stream.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class _Prefetch(io.RawIOBase):
    """Read a pipe ahead in a thread, so nfdump keeps printing while rows are converted.

    At most ``depth`` chunks of ``chunk`` bytes wait in memory (64 MiB by default).
    """

    def __init__(self, stream: Any, chunk: int = 1 << 20, depth: int = 64) -> None:
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._buf = b""
        self._eof = False
        self._stream = stream
        self._chunk = chunk
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            while True:
                data = self._stream.read1(self._chunk)
                self._queue.put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reader, never lost
            self._queue.put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._buf and not self._eof:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                self._eof = True
            self._buf = item
        n = min(len(buf), len(self._buf))
        buf[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def drain(self) -> None:
        """Let the pump thread finish (after the process was killed or ended)."""
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass


def header_fields(line: bytes, path: Path) -> list[str]:
    """Column names for nfdump's CSV header line, as v1 field names where known."""
    names = [n.strip() for n in line.decode("utf-8", "replace").strip().split(",")]
    fields = [CSV_HEADER_FIELDS.get(n, f"_{n}_{i}") for i, n in enumerate(names)]
    needed = {"time_start", "src_addr", "dst_addr", "bytes"}
    if not needed <= set(fields) or len(set(fields)) != len(fields):
        raise InputError(f"{path}: nfdump printed an unexpected header: {line[:200]!r}")
    return fields


def _is_header(line: bytes) -> bool:
    text = line.decode("utf-8", "replace").strip()
    return "," in text and text[:1].isalpha()


def _nfdump_converter(path: Path, options: ImportOptions) -> ColumnConverter:
    return ColumnConverter(
        str(path),
        v4compat=bool(options.get("v4compat", True)),
        icmp_dotted_port=True,
        now_us=options.get("now_us") or time.time_ns() // 1000,
    )


def _convert_stream(
    reader: CsvRowReader,
    columns: dict[str, str],
    converter: ColumnConverter,
    batch_rows: int,
    label: str,
    proto_names: dict[str, int] | None = None,
) -> Iterator[Batch]:
    acc = BatchAccumulator(batch_rows)
    where = converter.source_file
    for block, numbers, invalid in reader:
        cols = {fname: block.column(col) for fname, col in columns.items()}
        if proto_names and "proto" in cols:
            cols["proto"] = _rename_protocols(cols["proto"], proto_names)
        extra = invalid_lines_quarantine(where, invalid, label=label)
        yield from acc.add(converter.convert(cols, numbers, label=label, extra_quarantine=extra))
    yield from acc.flush()


def _rename_protocols(values: pa.Array, names: dict[str, int]) -> pa.Array:
    """Replace tool-specific protocol names by their numbers (text in, text out)."""
    import pyarrow.compute as pc

    lower = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    keys = pa.array(list(names), pa.string())
    nums = pa.array([str(v) for v in names.values()], pa.string())
    pos = pc.index_in(lower, value_set=keys)
    mapped = pc.take(nums, pos.fill_null(0))
    return pc.if_else(pos.is_valid(), mapped, values)


def reader_choice(options: ImportOptions) -> str:
    """``native`` or ``nfdump`` (the ``reader`` option); anything else is a ConfigError."""
    choice = options.get("reader") or "native"
    if choice not in READERS:
        raise ConfigError(f"--reader {choice!r}: use {' or '.join(READERS)}")
    return choice


def _report(path: Path, message: str) -> None:
    """One line on stderr about a file (fallback reasons, what the reader did not know)."""
    sys.stderr.write(f"{path}: {message}\n")
    sys.stderr.flush()


@register
class NfcapdImporter(Importer):
    """nfcapd files (nfdump 1.6/1.7 format): the native reader, or nfdump's text output."""

    format: ClassVar[str] = "nfcapd"
    counts: ClassVar[str] = COUNTS_SCALED
    description: ClassVar[str] = "nfcapd files (native reader; --reader nfdump reads via nfdump)"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return head[:2] == NFDUMP_MAGIC and head[2:4] in (b"\x01\x00", b"\x02\x00")

    def counts_for(self, options: ImportOptions) -> str:
        """Always ``scaled``: nfcapd multiplies counts by the sampling rate it knows."""
        return COUNTS_SCALED

    @classmethod
    def preflight(cls, options: ImportOptions) -> None:
        """Fail once, before any work, if ``--reader nfdump`` is asked for and nfdump is missing."""
        if reader_choice(options) == "nfdump":
            nfdump_version(nfdump_binary(options))

    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        if reader_choice(options) == "nfdump":
            yield from self._read_nfdump(path, options)
            return
        from flowatlas.io.nfcapd import NfcapdReader, NfcapdUnsupported

        try:
            reader = NfcapdReader(
                path,
                batch_rows=options.batch_rows,
                now_us=options.get("now_us") or time.time_ns() // 1000,
            )
        except NfcapdUnsupported as exc:
            why = str(exc).removeprefix(f"{path}: ")
            try:
                binary = nfdump_binary(options)
            except NfdumpMissing:
                raise NfdumpMissing(
                    f"{path}: {why}; reading it needs nfdump: install the Debian package "
                    "nfdump (apt-get install nfdump)"
                ) from None
            _report(path, f"{why}; reading it through {binary} instead")
            yield from self._read_nfdump(path, options)
            return
        yield from reader.batches()
        stats = reader.stats
        if stats.notes:
            _report(path, "nfcapd: " + "; ".join(stats.notes))
        if stats.unknown:
            listed = ", ".join(f"{name} x {n:,}" for name, n in sorted(stats.unknown.items()))
            _report(path, f"nfcapd: not understood, skipped by their length: {listed}")

    def _read_nfdump(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        """The file through ``nfdump -r FILE -o fmt:...`` (or ``csv:`` from nfdump 1.7.5)."""
        binary = nfdump_binary(options)
        try:
            with open(path, "rb") as fh:
                head = fh.read(4)
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from None
        if not self.sniff(path, head):
            raise InputError(f"{path}: not an nfcapd file (no nfdump file header)")
        version = nfdump_version(binary)
        argv, layout = nfdump_command(binary, path, version, options.get("nfdump_layout", "auto"))
        names = [fname for fname, _ in FIELDS]
        converter = _nfdump_converter(path, options)
        limit = NFDUMP_MIN_SECONDS + path.stat().st_size / NFDUMP_BYTES_PER_SECOND
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err, env=nfdump_env(), stdin=subprocess.DEVNULL
            )
            fired = threading.Event()

            def stop(proc: subprocess.Popen = proc) -> None:
                fired.set()
                proc.kill()

            watchdog = threading.Timer(limit, stop)
            watchdog.daemon = True
            watchdog.start()
            prefetch: _Prefetch | None = None
            try:
                assert proc.stdout is not None
                first = proc.stdout.readline()
                if first:
                    stream: Any = proc.stdout
                    if options.get("nfdump_prefetch", True):
                        prefetch = _Prefetch(proc.stdout)
                        stream = io.BufferedReader(prefetch, 1 << 20)
                    if _is_header(first):  # nfdump >= 1.7.5 names the columns: trust it
                        names = header_fields(first, path)
                    else:  # no header line: give the line back
                        stream = io.BufferedReader(_Prepend(first, stream), 1 << 16)
                    yield from self._parse(stream, names, converter, options)
                rc = proc.wait()
            finally:
                watchdog.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if prefetch is not None:
                    prefetch.drain()
                if proc.stdout is not None:
                    proc.stdout.close()
            err.seek(0)
            message = err.read().decode("utf-8", "replace").strip()
        if fired.is_set():
            raise InputError(
                f"{path}: nfdump did not finish reading it in {limit:.0f} s (a corrupt file "
                "can make it loop); the file is refused"
            )
        if rc != 0 or message:
            why = message.splitlines()[0] if message else f"exit status {rc}"
            raise InputError(f"{path}: nfdump cannot read it ({layout} output): {why}")

    def _parse(
        self, source: Any, names: list[str], converter: ColumnConverter, options: ImportOptions
    ) -> Iterator[Batch]:
        reader = CsvRowReader(
            source,
            converter.source_file,
            column_names=names,
            ignore_line=lambda text: text.strip() == _NO_FLOWS,
        )
        columns = {n: n for n in names if not n.startswith("_")}
        yield from _convert_stream(reader, columns, converter, options.batch_rows, "record")


def _summary_skipper() -> Callable[[str], bool]:
    """An invalid-line filter that drops nfdump's trailing ``Summary`` block."""
    state = {"summary": False}

    def ignore(text: str) -> bool:
        t = text.strip()
        if t == "Summary" or t == _NO_FLOWS:
            state["summary"] = True
            return True
        return state["summary"]

    return ignore


@register
class NfdumpCsvImporter(Importer):
    """Text files made by ``nfdump -o csv`` (the 1.7.1 layout or the 1.7.5+ one)."""

    format: ClassVar[str] = "nfdump-csv"
    counts: ClassVar[str] = COUNTS_SCALED
    description: ClassVar[str] = "text from nfdump -o csv (1.7.1 or 1.7.5+ layout)"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        line = first_line(head)
        if line is None:
            return False
        return line.startswith("ts,te,td,sa,da,") or line.startswith("firstSeen,")

    def counts_for(self, options: ImportOptions) -> str:
        """Always ``scaled``, as nfdump prints them."""
        return COUNTS_SCALED

    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        header = csv_header(path)
        columns: dict[str, str] = {}
        for name in header:
            fname = CSV_HEADER_FIELDS.get(name.strip())
            if fname and fname not in columns:
                columns[fname] = name
        needed = {"time_start", "src_addr", "dst_addr", "bytes"}
        if not needed <= set(columns):
            raise InputError(
                f"{path}: not nfdump CSV output: header lacks "
                f"{', '.join(sorted(needed - set(columns)))} (header: {', '.join(header[:12])})"
            )
        if "time_end" in columns:
            columns.pop("duration", None)
        converter = _nfdump_converter(path, options)
        reader = CsvRowReader(
            open_text_stream(path),
            str(path),
            columns=list(columns.values()),
            ignore_line=_summary_skipper(),
        )
        yield from _convert_stream(
            reader, columns, converter, options.batch_rows, "row", proto_names=NFDUMP_PROTOCOLS
        )


def stats_by_ip(
    binary: str, path: Path, element: str = "ip", nf_filter: str | None = None
) -> dict[str, tuple[int, int, int]]:
    """nfdump's own statistics (``-s ip/bytes``): address -> (flows, packets, bytes).

    ``element`` may be ``ip``, ``srcip`` or ``dstip``; ``nf_filter`` is an nfdump filter such
    as ``"dst net 10.0.0.0/8"``. Tests use this as the reference the archive must match.
    """
    argv = [binary, "-q", "-N", "-6", "-n", "0", "-s", f"{element}/bytes", "-o", "csv"]
    argv += ["-r", str(path)]
    if nf_filter:
        argv.append(nf_filter)
    out = subprocess.run(argv, capture_output=True, env=nfdump_env(), check=False)
    if out.returncode != 0:
        raise InputError(f"{path}: nfdump -s failed: {out.stderr.decode(errors='replace')}")
    lines = [ln for ln in out.stdout.decode().splitlines() if ln.strip()]
    if not lines:
        return {}
    header = [h.strip() for h in lines[0].split(",")]
    col = {name: i for i, name in enumerate(header)}
    key = "val" if "val" in col else next((h for h in ("ip", "ipAddr", "val") if h in col), None)
    flows = "fl" if "fl" in col else "flows"
    pkts = "pkt" if "pkt" in col else "packets"
    byts = "byt" if "byt" in col else "bytes"
    result: dict[str, tuple[int, int, int]] = {}
    for ln in lines[1:]:
        parts = [p.strip() for p in ln.split(",")]
        if len(parts) != len(header) or key is None:
            continue
        result[parts[col[key]]] = (
            int(parts[col[flows]]),
            int(parts[col[pkts]]),
            int(parts[col[byts]]),
        )
    return result


def summary_totals(
    binary: str, path: Path, window: tuple[str, str] | None = None
) -> tuple[int, int, int]:
    """nfdump's totals for a file: (flows, packets, bytes), from ``-o null``'s summary line.

    ``window`` is nfdump's ``-t`` time window, e.g. ``("1990/01/01.00:00:00",
    "2037/12/31.23:59:59")``.
    """
    argv = [binary, "-N", "-r", str(path), "-o", "null"]
    if window is not None:
        argv += ["-t", f"{window[0]}-{window[1]}"]
    out = subprocess.run(argv, capture_output=True, env=nfdump_env(), check=False)
    text = out.stdout.decode(errors="replace")
    m = _SUMMARY.search(text)
    if not m:
        raise InputError(f"{path}: no summary in nfdump's output: {text[:200]!r}")
    return int(m.group(1)), int(m.group(3)), int(m.group(2))


_SUMMARY = re.compile(r"total flows: (\d+), total bytes: (\d+), total packets: (\d+)")


__all__ = [
    "CSV_HEADER_FIELDS",
    "FIELDS",
    "READERS",
    "NfcapdImporter",
    "NfdumpCsvImporter",
    "NfdumpMissing",
    "nfdump_binary",
    "nfdump_command",
    "nfdump_env",
    "nfdump_version",
    "reader_choice",
    "stats_by_ip",
    "summary_totals",
]
