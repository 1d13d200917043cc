"""The compiled prefix table: immutable, deterministic, saved once and loaded by every build.

A table is a step function over the 128-bit address space (sorted starts, a network id each)
plus the networks (network type, ASN, organisation, country, the source and row that won) and
provenance (the sources it was compiled from, with content hashes). Its ``digest`` names its
content; cubes record it so a cube can be rebuilt with the exact table it was built with.

File format (``.fatable``, version 4): one uncompressed file that a build maps into memory
instead of reading: a 24-byte head (magic, version, header length), a JSON header (the meta,
the digest, and each section's offset, length and CRC-32), then page-aligned sections: the
step function (``starts_hi``, ``starts_lo``, ``values``), its lookup index (the arrays of
:class:`~flowatlas.kernels.lpm.LpmArrays`, so no build rebuilds it) and ``networks`` (Arrow
IPC, read zero-copy). The same table gives the same bytes. Opening costs a CRC-32 pass over
the mapped pages (~4 GB/s) and the expansion of the two root indexes from their runs, instead
of zlib decompression plus an index build (0.4-0.8 s for a 900 k-prefix table); the two are
independent and release the GIL, so two threads share them (a 900 k-network table: ~35 ms of
CRC and ~50 ms of expansion, measured one after the other on an idle core).

Integrity: every section is checked in full before :meth:`PrefixTable.load` returns, so a
damaged file is an :class:`~flowatlas.errors.InputError` naming it and the section, never
wrong answers or a crash in a kernel that trusts the index (no check can be left for later:
the lookup kernels index the arrays without bounds checks). A truncated file is known from
its size before any byte is read.

Version 3 differs from version 2 only in the index: its chains of one-path IPv6 nodes are
skips (:func:`~flowatlas.kernels.lpm.skip_chains`), entries a flowatlas that reads version 2
would take for something else; hence the new number, which such a flowatlas refuses with a
message. Version 2 files still load, their index given its skips when opened (in memory: the
file stays as it is). Version 4 stores the IPv4 root's size (``shift4`` in the header:
2^16 or 2^24 entries, :func:`~flowatlas.kernels.lpm.default_bits4`); versions 2 and 3 have the
2^24 root, used as stored, except for tables small enough for the 2^16 root: their index is
built again on open (a few ms) rather than a 64 MiB root expanded. A flowatlas before version
4 refuses a version 4 file with "compile it again". Version 1 files (a zip archive of Arrow
IPC members) still load; their index is built on first use, as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import struct
import threading
import weakref
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flowatlas.classify.compiler import Compiled
from flowatlas.errors import InputError, OutputError
from flowatlas.kernels.lpm import (
    V4_BITS,
    V4_BLOCK_BITS,
    LpmArrays,
    build_index,
    default_bits4,
    expand_runs,
    lookup_cpu,
    skip_chains,
)
from flowatlas.vocab import NETWORK_TYPES, UNKNOWN

DEFAULT_BITS6 = 16
FORMAT = "flowatlas-prefix-table"
FORMAT_VERSION = 4
#: versions whose mapped layout this flowatlas reads (2: the index without skips; 2 and 3:
#: its IPv4 root always 2^24 entries)
_MAPPED_VERSIONS = (2, 3, 4)
#: the first bytes of a version 2+ file; version 1 files are zip archives (``PK``)
MAGIC = b"FATABLE\x00"
_HEAD = struct.Struct("<8sII Q")  # magic, format version, reserved (0), header length
#: the longest header a table file may give (a table's is a few kB): more is damage
_MAX_HEADER = 1 << 24


def _head(first: bytes) -> tuple[int, int] | None:
    """(format version, header length) from the first :data:`_HEAD` bytes of a version 2+
    table file; None where they are not a table's. ValueError for a header length no table
    has (damage: reading it would ask for more bytes than memory holds)."""
    if len(first) < _HEAD.size or first[:8] != MAGIC:
        return None
    _, version, _, header_len = _HEAD.unpack(first)
    if header_len > _MAX_HEADER:
        raise ValueError(f"a header of {header_len} bytes, more than any table's")
    return version, header_len


#: sections start on page boundaries, so every array is aligned for any dtype and the
#: 64-byte node heads each sit in one cache line
_ALIGN = 4096
#: the index's two roots, stored as runs of equal entries (see :func:`_as_runs`)
_ROOTS = ("idx4", "idx6")
_RUN_PARTS = ("starts", "entries")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def default_bits6(starts_hi: np.ndarray, starts_lo: np.ndarray) -> int:
    """IPv6 root size for a step function: a 2^24 root (64 MiB) saves one trie level, ~15%
    faster IPv6 lookups measured on full routing tables; small tables keep 2^16 (256 KiB)."""
    from flowatlas.addresses import is_v4

    return 24 if int((~is_v4(starts_hi, starts_lo)).sum()) > 50_000 else DEFAULT_BITS6


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


@dataclass(frozen=True)
class PrefixTable:
    """A compiled classification table; look addresses up with :meth:`lookup`."""

    starts_hi: np.ndarray
    starts_lo: np.ndarray
    values: np.ndarray
    networks: pa.Table
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ identity
    @cached_property
    def digest(self) -> str:
        """sha256 of the table's content (steps and networks)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.starts_hi).tobytes())
        h.update(np.ascontiguousarray(self.starts_lo).tobytes())
        h.update(np.ascontiguousarray(self.values).tobytes())
        h.update(_ipc_bytes(self.networks))
        return h.hexdigest()

    @property
    def sources(self) -> list[dict[str, Any]]:
        return list(self.meta.get("sources", []))

    @property
    def bits6(self) -> int:
        """Bits of the IPv6 root index (the rest is split into nodes where crowded)."""
        return int(self.meta.get("bits6", DEFAULT_BITS6))

    @property
    def bits4(self) -> int | None:
        """Bits of the IPv4 root index where the meta fixes them (tests); None: chosen when
        the index is built (:func:`~flowatlas.kernels.lpm.default_bits4`)."""
        bits = self.meta.get("bits4")
        return None if bits is None else int(bits)

    @classmethod
    def from_compiled(
        cls, compiled: Compiled, meta: dict[str, Any] | None = None, *, bits6: int = DEFAULT_BITS6
    ) -> PrefixTable:
        """Wrap a compiler result; ``meta`` carries the sources' provenance."""
        meta = dict(meta or {})
        meta.setdefault("sources", [])
        meta["bits6"] = bits6
        meta["stats"] = compiled.stats
        meta["warnings"] = list(compiled.warnings)
        return cls(compiled.starts_hi, compiled.starts_lo, compiled.values, compiled.networks, meta)

    def provenance(self) -> dict[str, Any]:
        """What a cube records about the table it was built with."""
        return {
            "digest": self.digest,
            "intervals": int(self.starts_hi.size),
            "networks": int(self.networks.num_rows),
            "sources": self.sources,
            "warnings": list(self.meta.get("warnings", [])),
            "path": self.meta.get("path"),
        }

    # ------------------------------------------------------------------ lookups
    @cached_property
    def index(self) -> LpmArrays:
        """The direct-index lookup arrays (built on first use: a few ms for a small table, whose
        IPv4 root is 2^16 entries; ~0.1 s for a routing table's, with its 64 MiB root)."""
        return build_index(self.starts_hi, self.starts_lo, self.values, self.bits6, self.bits4)

    def lookup(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Network id of each address (int32; -1 = no source covers it)."""
        return lookup_cpu(self.index, hi, lo)

    @cached_property
    def network_type_names(self) -> list[str]:
        return self.networks.column("network_type").to_pylist()

    @cached_property
    def _network_type_index(self) -> tuple[list[str], np.ndarray]:
        """See :func:`_type_index`."""
        return _type_index(self.networks, self.meta.get("path", "prefix table"))

    @property
    def network_types_used(self) -> list[str]:
        """The network types the networks carry, once each, in order of first appearance
        (Arrow's hash kernels: no Python loop over a large table's ~1 M networks)."""
        return list(self._network_type_index[0])

    def type_codes(self, vocabulary: Sequence[str] = NETWORK_TYPES) -> np.ndarray:
        """Map network id -> index into ``vocabulary``; entry [-1] (no match) is Unknown.

        The returned array has one more entry than there are networks, so ``codes[ids]``
        works for ids of -1. Types missing from the vocabulary are an error.
        """
        pos = {t: i for i, t in enumerate(vocabulary)}
        used, which = self._network_type_index
        missing = sorted({t for t in used if t not in pos})
        if missing:
            raise InputError(
                f"prefix table uses network types not configured: {', '.join(missing)} "
                "(add them under [classify] network_types)"
            )
        # each network's index into ``used``, then that type's code
        code_of_used = np.array([pos[t] for t in used], dtype=np.uint8)
        return np.append(code_of_used[which], np.uint8(pos[UNKNOWN]))

    @cached_property
    def asn_names(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """How the top lists name ASNs and addresses: see :func:`_asn_names`."""
        return _asn_names(self.networks)

    @cached_property
    def geography(self) -> tuple[np.ndarray, tuple[tuple[str | None, str | None], ...]] | None:
        """Each network's (country, metro) code (plus one for id -1: neither) and the pairs
        the codes stand for, in (country, metro) order with unknowns last; None where the
        table names no country or metro at all. See :func:`_geography`."""
        return _geography(self.networks)

    @cached_property
    def _user_override(self) -> np.ndarray:
        return _user_override(self.networks)

    def user_override_mask(self) -> np.ndarray:
        """True per network id (plus a last entry, False, for -1) whose type a user rule set.

        Precedence puts user overrides above exporter/interface rules (Migration), which sit
        above everything else: the engine applies a link rule to a flow unless this is True
        for the flow's remote network.
        """
        return self._user_override.copy()

    def describe(self, network_id: int) -> dict[str, Any]:
        """Attributes of one network id and why its type won (`flowatlas classify lookup`)."""
        if network_id < 0:
            return {
                "network_type": UNKNOWN,
                "asn": 0,
                "org": None,
                "country": None,
                "metro": None,
                "tier": "none",
                "type_source": None,
                "source": None,
                "source_line": None,
                "prefix": None,
            }
        return {k: v[0] for k, v in self.networks.slice(network_id, 1).to_pydict().items()}

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table with its lookup index (atomically); the same table always gives the
        same bytes. The index is built here if it was not yet, so no later build has to."""
        path = Path(path)
        index = self.index
        meta = {k: v for k, v in self.meta.items() if k != "path"}
        meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, "digest": self.digest})
        sections: list[tuple[str, memoryview]] = [
            ("starts_hi", _bytes_of(self.starts_hi, np.uint64)),
            ("starts_lo", _bytes_of(self.starts_lo, np.uint64)),
            ("values", _bytes_of(self.values, np.int32)),
            *(
                (f"{name}_{part}", _bytes_of(a, np.uint32))
                for name in _ROOTS
                for part, a in zip(_RUN_PARTS, _as_runs(getattr(index, name)), strict=True)
            ),
            ("heads", _bytes_of(index.heads, np.uint64)),
            ("runs", _bytes_of(index.runs, np.uint32)),
            ("networks", memoryview(_ipc_bytes(self.networks))),
        ]
        layout = []
        offset = 0
        for name, data in sections:
            layout.append(
                {"name": name, "offset": offset, "nbytes": data.nbytes, "crc32": zlib.crc32(data)}
            )
            offset += _padded(data.nbytes)
        header = json.dumps(
            {
                "meta": meta,
                "shift4": int(index.shift4),
                "shift6": int(index.shift6),
                "sections": layout,
            },
            sort_keys=True,
            indent=1,
        ).encode()
        head = _HEAD.pack(MAGIC, FORMAT_VERSION, 0, len(header)) + header
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(head + bytes(_padded(len(head)) - len(head)))
                for _, data in sections:
                    f.write(data)
                    f.write(bytes(_padded(data.nbytes) - data.nbytes))
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot write prefix table: {exc.strerror or exc}") from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, precompute: bool = False) -> PrefixTable:
        """Open a table written by :meth:`save`, memory-mapped; errors name the file.

        Every section's CRC-32 is checked, so a damaged file is an error, never wrong answers.
        ``precompute`` also computes what every build asks of a table (:func:`_derived`)
        while the roots expand (the expansion waits for numba, which a build's own thread may
        be starting).
        """
        path = Path(path)
        try:
            with open(path, "rb") as f:
                first = f.read(_HEAD.size)
                if first[:2] == b"PK":
                    return cls._load_zip(path)
                head = _head(first)
                if head is None:
                    raise InputError(f"{path}: not a flowatlas prefix table")
                version, header_len = head
                if version not in _MAPPED_VERSIONS:
                    raise InputError(
                        f"{path}: prefix table format version {version}, this flowatlas reads 1 "
                        f"to {FORMAT_VERSION}: compile it again with `flowatlas classify compile`"
                    )
                header = json.loads(f.read(header_len))
                # a private (copy-on-write) mapping: writable arrays, so the kernels see the
                # same array types as for an index built in memory, and the file stays as it is
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except FileNotFoundError:
            raise InputError(f"{path}: prefix table not found") from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a flowatlas prefix table: {exc}") from None
        try:
            return cls._from_mapped(
                path, _padded(_HEAD.size + header_len), header, data, precompute, version
            )
        except (KeyError, TypeError, ValueError, pa.ArrowException) as exc:
            raise InputError(f"{path}: prefix table is corrupt: {exc}") from None

    @classmethod
    def _from_mapped(
        cls,
        path: Path,
        base: int,
        header: dict[str, Any],
        data: mmap.mmap,
        precompute: bool,
        version: int = FORMAT_VERSION,
    ) -> PrefixTable:
        """The table whose sections lie from ``base`` in ``data`` (see the module docstring);
        a version 2 file's index gets its skips here."""
        meta = header["meta"]
        if meta.get("format") != FORMAT:
            raise InputError(
                f"{path}: not a flowatlas prefix table (format {meta.get('format')!r})"
            )
        view = memoryview(data)
        parts: dict[str, memoryview] = {}
        crcs: dict[str, int] = {}
        for s in header["sections"]:
            start = base + int(s["offset"])
            part = view[start : start + int(s["nbytes"])]
            if part.nbytes != int(s["nbytes"]):  # a truncated file: known from its size alone
                raise InputError(f"{path}: prefix table is corrupt (section {s['name']} damaged)")
            parts[s["name"]] = part
            crcs[s["name"]] = int(s["crc32"])

        def array(name: str, dtype: type) -> np.ndarray:
            return np.frombuffer(parts[name], dtype=dtype)

        bits6 = 64 - int(header["shift6"])
        # versions 2 and 3 have no shift4: their IPv4 root is always the /24 one
        bits4 = 32 - int(header["shift4"]) if version >= 4 else V4_BLOCK_BITS
        if bits6 not in (8, 16, 24) or bits4 not in V4_BITS:
            raise ValueError("index sizes do not match the table")
        # a version 2 or 3 file of a table small enough for the small IPv4 root: its index
        # built again (a few ms for such a table) rather than its 64 MiB IPv4 root expanded
        rebuild = (
            version < 4
            and default_bits4(array("starts_hi", np.uint64), array("starts_lo", np.uint64))
            != V4_BLOCK_BITS
        )
        # checking every section's CRC-32 (zlib releases the GIL) and expanding the two roots
        # (a nogil kernel, 64 MiB each at most) are independent: two threads share them, the
        # checks first (the expansion's kernel may wait for numba to start), then the
        # networks' derived arrays (:func:`_derived`), then the roots; nothing is returned
        # before every check has passed, and nothing reads the networks before theirs has
        by_size = sorted(parts, key=lambda n: -parts[n].nbytes)

        def networks() -> tuple[pa.Table, list[tuple[str, Any]]] | None:
            if checks["networks"].result() != crcs["networks"]:
                return None  # reported below, with the other sections
            nets = pa.ipc.open_file(pa.py_buffer(parts["networks"])).read_all()
            return nets, _derived(nets, str(path)) if precompute else []

        with ThreadPoolExecutor(2) as pool:
            checks = {n: pool.submit(zlib.crc32, parts[n]) for n in by_size}
            derived = pool.submit(networks)
            roots = [
                pool.submit(expand_runs, array(f"{root}_starts", np.uint32),
                            array(f"{root}_entries", np.uint32), size)
                for root, size in (("idx4", 1 << bits4), ("idx6", 1 << bits6))
                if not rebuild
            ]  # fmt: skip
            for name, check in checks.items():
                if check.result() != crcs[name]:
                    raise InputError(f"{path}: prefix table is corrupt (section {name} damaged)")
            nets, cached = derived.result()
            roots = [r.result() for r in roots]

        meta["path"] = str(path)
        table = cls(
            array("starts_hi", np.uint64),
            array("starts_lo", np.uint64),
            array("values", np.int32),
            nets,
            meta,
        )
        table.__dict__.update(cached)
        if not table.starts_hi.size == table.starts_lo.size == table.values.size:
            raise ValueError("index sizes do not match the table")
        if rebuild:
            index = build_index(table.starts_hi, table.starts_lo, table.values, bits6)
        else:
            index = LpmArrays(
                table.starts_hi,
                table.starts_lo,
                table.values,
                *roots,
                array("heads", np.uint64),
                array("runs", np.uint32),
                np.uint64(64 - bits6),
                np.uint64(32 - bits4),
            )
        if version < 3 and not rebuild:  # written before skips: made now, in the private
            skip_chains(index)  # mapping's pages
        # the CRCs vouch for the bytes the digest was computed from when the file was saved
        table.__dict__["digest"] = meta["digest"]
        table.__dict__["index"] = index
        table.__dict__["_mapped"] = str(path)
        return table

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickles without the index; a table opened from a file opens the same file again
        where that file is there (a local process cluster: no index rebuilt per worker).

        A table marked :meth:`by_path` pickles as its file's path and digest alone (a few
        hundred bytes, not the 100-odd MiB of a full prefix-to-ASN table's arrays): for
        processes known to see that file."""
        mapped = self.__dict__.get("_mapped")
        if mapped is not None and self.__dict__.get("_by_path"):
            return _open_by_path, (mapped, self.digest)
        args = (self.starts_hi, self.starts_lo, self.values, self.networks, self.meta)
        return _unpickle, (args, mapped, self.digest)

    @property
    def path(self) -> str | None:
        """The absolute path of the file this table was opened from (memory-mapped), or
        None: a table built in memory, or read from a version 1 file."""
        mapped = self.__dict__.get("_mapped")
        return None if mapped is None else os.path.abspath(mapped)

    def by_path(self) -> PrefixTable:
        """This table (a shallow copy sharing its arrays) that pickles as its file's path and
        digest alone; the process that unpickles it opens that file, memory-mapped, once
        (:func:`_open_by_path`), and fails if the file is not there or holds another table.
        Only for a table opened from a file (:attr:`path`)."""
        path = self.path
        if path is None:
            raise ValueError("only a table opened from its file pickles by path")
        table = object.__new__(PrefixTable)  # (copy.copy would pickle it)
        table.__dict__.update(self.__dict__, _mapped=path, _by_path=True)
        _OPENED[(path, table.digest)] = table  # this process: the same table, not opened again
        return table

    @classmethod
    def _load_zip(cls, path: Path) -> PrefixTable:
        """Read a version 1 table (a zip archive of Arrow IPC members)."""
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("meta.json"))
                steps = pa.ipc.open_file(pa.py_buffer(zf.read("steps.arrow"))).read_all()
                networks = pa.ipc.open_file(pa.py_buffer(zf.read("networks.arrow"))).read_all()
        except (
            OSError,
            KeyError,
            zipfile.BadZipFile,
            json.JSONDecodeError,
            pa.ArrowException,
        ) as exc:
            raise InputError(f"{path}: not a flowatlas prefix table: {exc}") from None
        if meta.get("format") != FORMAT or meta.get("format_version") != 1:
            raise InputError(
                f"{path}: not a flowatlas prefix table (format {meta.get('format')!r})"
            )
        meta["path"] = str(path)
        table = cls(
            steps.column("start_hi").to_numpy(),
            steps.column("start_lo").to_numpy(),
            steps.column("network").to_numpy(),
            networks,
            meta,
        )
        if table.digest != meta.get("digest"):
            raise InputError(f"{path}: prefix table is corrupt (content does not match its digest)")
        return table


def _type_index(networks: pa.Table, where: str) -> tuple[list[str], np.ndarray]:
    """The network types the networks carry, once each in order of first appearance, and
    each network's position in that list: one pass of Arrow's hash kernel over the column
    (a 900 k-network table: one pass instead of a ``unique`` and an ``index_in``)."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(networks.column("network_type").combine_chunks())
    if encoded.null_count:  # compiled tables say Unknown, never null
        raise InputError(f"{where}: a network has no type")
    which = encoded.indices.to_numpy()  # no nulls: a view, no copy
    return encoded.dictionary.to_pylist(), which


def _asn_names(networks: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each network's ASN (uint32, plus a 0 for id -1), the ASNs some network names an
    organisation for (ascending), and the first such network of each (in network-id order:
    its organisation is the ASN's name in the top lists)."""
    asn_of = np.append(networks.column("asn").to_numpy().astype(np.uint32), np.uint32(0))
    valid = np.asarray(networks.column("org").is_valid(), dtype=bool)
    named = np.flatnonzero((asn_of[:-1] != 0) & valid)
    known, first = first_of_each(asn_of[named])
    return asn_of, known, named[first]


def _user_override(networks: pa.Table) -> np.ndarray:
    """See :meth:`PrefixTable.user_override_mask`."""
    import pyarrow.compute as pc

    if "tier" not in networks.column_names:
        return np.zeros(networks.num_rows + 1, dtype=bool)
    tier = networks.column("tier")
    user = pc.is_in(tier, value_set=pa.array(["override", "override-asn"], tier.type))
    return np.append(np.asarray(user.fill_null(False), dtype=bool), False)


def _geography(
    networks: pa.Table,
) -> tuple[np.ndarray, tuple[tuple[str | None, str | None], ...]] | None:
    """Each network's (country, metro) code, codes in (country, metro) order, unknowns last;
    None where the networks name no country or metro at all."""
    cols = networks.column_names
    if "country" not in cols or "metro" not in cols:
        return None
    country = networks.column("country").combine_chunks().dictionary_encode()
    metro = networks.column("metro").combine_chunks().dictionary_encode()
    if country.null_count == len(country) and metro.null_count == len(metro):
        return None
    c_names = [*country.dictionary.to_pylist(), None]
    m_names = [*metro.dictionary.to_pylist(), None]
    ci = country.indices.fill_null(len(c_names) - 1).to_numpy().astype(np.int64)
    mi = metro.indices.fill_null(len(m_names) - 1).to_numpy().astype(np.int64)
    # one code per distinct pair; the last network id (no match) has neither
    pair = np.append(ci * len(m_names) + mi, (len(c_names) - 1) * len(m_names) + len(m_names) - 1)
    uniq, inv = np.unique(pair, return_inverse=True)
    names = [(c_names[u // len(m_names)], m_names[u % len(m_names)]) for u in uniq.tolist()]

    def order(p: tuple[str | None, str | None]) -> tuple[bool, str, bool, str]:
        return (p[0] is None, p[0] or "", p[1] is None, p[1] or "")

    rank = sorted(range(len(names)), key=lambda i: order(names[i]))
    code = np.empty(len(names), np.int32)
    code[rank] = np.arange(len(names), dtype=np.int32)
    return code[inv.reshape(-1)], tuple(names[i] for i in rank)


def _derived(networks: pa.Table, where: str) -> list[tuple[str, Any]]:
    """What every build asks of a table (the type index, the ASN names, the override mask, the
    geography), as (cached attribute, value) pairs: ``PrefixTable.load(precompute=True)``."""
    return [
        ("_network_type_index", _type_index(networks, where)),
        ("asn_names", _asn_names(networks)),
        ("_user_override", _user_override(networks)),
        ("geography", _geography(networks)),
    ]


def first_of_each(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values, sorted, and where each first occurs: ``np.unique(values,
    return_index=True)``, in a fifth of its time on large arrays.

    ``np.unique`` finds first occurrences with a stable argsort (0.09-0.17 s for a
    900 k-network table's ASNs); NumPy's default argsort is several times faster but not
    stable, so the first occurrence of each value is taken as the least position in its run.
    """
    values = np.asarray(values)
    if values.size == 0:
        return values[:0].copy(), np.zeros(0, np.intp)
    order = np.argsort(values)
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[starts], np.minimum.reduceat(order, starts).astype(np.intp)


def _padded(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _bytes_of(a: np.ndarray, dtype: type) -> memoryview:
    return memoryview(np.ascontiguousarray(a, dtype=dtype)).cast("B")


def _as_runs(root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A root index as runs of equal entries: where each run starts, and its entry
    (:func:`~flowatlas.kernels.lpm.expand_runs` expands them).

    Roots are 2^24 entries (64 MiB) each, but most neighbouring blocks lie in one interval:
    the synthetic world's IPv4 root is 675 runs, a 900 k-prefix table's 1.4 M. Expanding them
    on open costs about what checking 64 MiB of CRC would, and lands the roots in NumPy
    memory, which transparent huge pages back (a file mapping's pages are 4 KiB).
    """
    starts = np.flatnonzero(root[1:] != root[:-1]).astype(np.uint32) + np.uint32(1)
    starts = np.concatenate([np.zeros(1, np.uint32), starts])
    return starts, root[starts]


#: the tables this process opened for a pickle made by :meth:`PrefixTable.by_path`, by path
#: and digest: each is opened once a process, and let go with the last plan that holds it
_OPENED: weakref.WeakValueDictionary[tuple[str, str], PrefixTable] = weakref.WeakValueDictionary()
_OPENING = threading.Lock()


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """The digest a version 2+ table file's header gives for its table (reading the
    header only, no section), or None where ``path`` is no such file or cannot be read: a
    cheap test that a process sees the table a build opened (a Dask worker, before the
    table is sent to it by path)."""
    try:
        with open(path, "rb") as f:
            head = _head(f.read(_HEAD.size))
            if head is None:
                return None
            header = json.loads(f.read(head[1]))
        digest = header["meta"]["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None


def _open_by_path(path: str, digest: str) -> PrefixTable:
    """A table pickled by :meth:`PrefixTable.by_path`: its file opened here (once a
    process), which must still hold the table with that digest."""
    with _OPENING:  # a worker's threads may unpickle the plan at once: one opens the file
        table = _OPENED.get((path, digest))
        if table is None:
            try:
                opened = PrefixTable.load(path)
            except InputError as exc:
                raise InputError(
                    f"{exc} (in a process the build sent the table to by its path: every "
                    "Dask worker must see the prefix table's file at the same path)"
                ) from None
            if opened.digest != digest:
                raise InputError(
                    f"{path}: the prefix table changed while the build was running "
                    f"(digest {opened.digest[:12]}, the build opened {digest[:12]})"
                )
            table = opened.by_path()
    return table


def _unpickle(args: tuple[Any, ...], mapped: str | None, digest: str) -> PrefixTable:
    """A pickled table: the file it was opened from if that file still holds it, else the
    pickled arrays (whose index is then built on first use)."""
    if mapped is not None:
        try:
            table = PrefixTable.load(mapped)
        except InputError:
            table = None
        if table is not None and table.digest == digest:
            return table
    return PrefixTable(*args)
