"""The import manifest: which source files an archive already holds, by content.

``flowatlas import`` keeps ``ARCHIVE/_import/manifest.json`` (names starting with ``_`` are
not read as archive data). Each imported source file has an entry: absolute path, size,
SHA-256 of its content, format, records read / written / quarantined (by reason) and the
archive files it produced. This makes imports

- idempotent: a file whose content hash is in the manifest is skipped, whatever its path
  (the content of a ``.gz``, ``.bz2`` or ``.zst`` file is what it decompresses to, so a
  compressed copy of an imported file is skipped too);
- checkable: every archive and quarantine file a source produced is recorded with its size,
  the SHA-256 of its bytes and of its Parquet footer (``output_files``), so that a build can
  refuse a file that changed and ``flowatlas verify`` can find bit rot;
- resumable: a source is marked *pending* (with the output name it will use) before its first
  row is written and moved to the entries when its files are complete. After an interruption
  the next import deletes whatever a pending source left behind (finished files under its name
  and hidden ``.tmp`` files) and imports it again, while finished sources stay done.

The manifest is rewritten atomically (temporary file, fsync, rename) after every source, and
a lock file keeps two imports (or an import and a ``flowatlas rewrite``) from writing one
archive at the same time.

``flowatlas rewrite`` re-encodes archive files in place: it records each new file's
description under ``rewriting`` (archive path -> size, SHA-256, footer hash) before the old
file is replaced, and moves it into the file's ``output_files`` after. A file listed there
may be the old one or the new one (a rewrite that was interrupted between the two saves);
both are what was written, and the next rewrite settles the record
(:meth:`Manifest.settle_rewrites`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowatlas.errors import InputError, OutputError

MANIFEST_VERSION = 1
IMPORT_DIR = "_import"
MANIFEST_NAME = "manifest.json"
QUARANTINE_DIR = "quarantine"
_HASH_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    return h.hexdigest(), size


#: compressed files whose content (not their bytes) identifies them: what readers decompress
#: (pyarrow's ``compression="detect"``, by extension)
_COMPRESSED = {".gz": b"\x1f\x8b", ".bz2": b"BZh", ".zst": b"\x28\xb5\x2f\xfd"}


def content_sha256(path: str | os.PathLike[str]) -> tuple[str, int, str | None]:
    """(content SHA-256, file size, SHA-256 of the bytes if different) of a source file.

    The content of a compressed file (``.gz``, ``.bz2``, ``.zst`` with the matching magic
    number) is what it decompresses to, as the importers read it; a file that does not
    decompress is taken as its bytes (its import will say what is wrong with it).
    """
    raw, size = sha256_file(path)
    magic = _COMPRESSED.get(Path(path).suffix.lower())
    if magic is None:
        return raw, size, None
    try:
        with open(path, "rb") as fh:
            if fh.read(len(magic)) != magic:
                return raw, size, None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    import pyarrow as pa

    h = hashlib.sha256()
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            while chunk := stream.read(_HASH_CHUNK):
                h.update(chunk)
    except (OSError, pa.ArrowException):
        return raw, size, None
    return h.hexdigest(), size, raw


def describe_output(path: Path) -> dict[str, Any]:
    """What an archive file is, for the manifest: size, SHA-256 of its bytes and footer."""
    from flowatlas.io.archive import footer_sha256

    sha, size = sha256_file(path)
    return {"size": size, "sha256": sha, "footer_sha256": footer_sha256(path, size)}


def output_name(fmt: str, sha256: str) -> str:
    """The archive file name (without ``.parquet``) a source's rows are written under."""
    return f"{fmt}-{sha256[:16]}"


@dataclass
class FileEntry:
    """One imported source file and what it became."""

    path: str
    size: int
    sha256: str
    format: str
    counts: str
    records_read: int
    records_written: int
    records_quarantined: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # relative to the archive root
    quarantine_file: str | None = None
    no_local_prefix: int | None = None
    config_digest: str | None = None
    imported_at: str = ""
    #: relative path -> {"size", "sha256", "footer_sha256"} of every file written for it
    output_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: SHA-256 of the file's bytes, where ``sha256`` is that of its decompressed content
    file_sha256: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileEntry:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Pending:
    """A source whose import started but has not finished (yet, or ever)."""

    sha256: str
    name: str
    path: str


class Manifest:
    """The manifest of one archive; load with :meth:`open`, change, :meth:`save`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.entries: dict[str, FileEntry] = {}
        self.pending: dict[str, Pending] = {}
        #: archive path -> the description of the file a rewrite is replacing it with
        self.rewriting: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------- location

    @property
    def import_dir(self) -> Path:
        return self.root / IMPORT_DIR

    @property
    def path(self) -> Path:
        return self.import_dir / MANIFEST_NAME

    @property
    def quarantine_dir(self) -> Path:
        return self.import_dir / QUARANTINE_DIR

    # ---------------------------------------------------------------- load / save

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> Manifest:
        """Load the archive's manifest (an empty one if the archive has none yet)."""
        m = cls(Path(root))
        try:
            text = m.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return m
        except OSError as exc:
            raise InputError(f"{m.path}: cannot read: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
            if data.get("flowatlas_import_manifest") != MANIFEST_VERSION:
                raise ValueError(
                    f"unknown manifest version {data.get('flowatlas_import_manifest')}"
                )
            for d in data.get("files", []):
                e = FileEntry.from_dict(d)
                m.entries[e.sha256] = e
            for d in data.get("pending", []):
                p = Pending(d["sha256"], d["name"], d["path"])
                m.pending[p.sha256] = p
            rewriting = data.get("rewriting", {})
            if not isinstance(rewriting, dict):
                raise ValueError("rewriting is not an object")
            m.rewriting = {str(k): dict(v) for k, v in rewriting.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(
                f"{m.path}: corrupt import manifest ({exc}); move it away to re-import everything"
            ) from None
        return m

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "flowatlas_import_manifest": MANIFEST_VERSION,
            "files": [asdict(e) for e in sorted(self.entries.values(), key=_entry_key)],
            "pending": [asdict(p) for p in sorted(self.pending.values(), key=lambda p: p.path)],
        }
        if self.rewriting:  # only while a rewrite is under way: manifests stay as they were
            out["rewriting"] = dict(sorted(self.rewriting.items()))
        return out

    def save(self) -> None:
        """Write the manifest atomically (a reader sees the old or the new one, never half)."""
        try:
            self.import_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{MANIFEST_NAME}.tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=1, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write: {exc.strerror or exc}") from None

    # ---------------------------------------------------------------- changes

    def has(self, sha256: str) -> bool:
        return sha256 in self.entries

    def by_file_hash(self) -> dict[str, str]:
        """Content hash of each entry imported from a compressed file, by its bytes' hash."""
        return {e.file_sha256: e.sha256 for e in self.entries.values() if e.file_sha256}

    def begin(self, sha256: str, name: str, path: str) -> None:
        """Mark a source as being imported under ``name`` (call :meth:`save` after)."""
        self.pending[sha256] = Pending(sha256, name, path)

    def finish(self, entry: FileEntry) -> None:
        """Record a completed source and drop its pending mark."""
        if not entry.imported_at:
            entry.imported_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.entries[entry.sha256] = entry
        self.pending.pop(entry.sha256, None)

    def abandon(self, sha256: str) -> None:
        """Forget a pending source (its import failed and cleaned up after itself)."""
        p = self.pending.pop(sha256, None)
        if p is not None:
            remove_outputs(self.root, p.name)

    def forget(self, sha256: str) -> None:
        """Remove an imported source and its archive files (for ``--reimport``)."""
        e = self.entries.pop(sha256, None)
        if e is None:
            return
        for rel in e.outputs:
            (self.root / rel).unlink(missing_ok=True)
        if e.quarantine_file:
            (self.root / e.quarantine_file).unlink(missing_ok=True)
        remove_outputs(self.root, output_name(e.format, e.sha256))

    def by_output(self) -> dict[str, FileEntry]:
        """The entry that lists each archive and quarantine file, by its path relative to
        the root (its description is ``entry.output_files[path]``)."""
        return {rel: e for e in self.entries.values() for rel in e.output_files}

    def replaced(self, rel: str, info: dict[str, Any], by_output: dict[str, FileEntry]) -> None:
        """Record that the archive file ``rel`` is now the file ``info`` describes (a
        rewrite replaced it) and drop its ``rewriting`` mark (call :meth:`save` after).
        ``by_output``: :meth:`by_output`'s answer (one lookup a file, not a scan)."""
        e = by_output.get(rel)
        if e is not None:
            e.output_files[rel] = dict(info)
        self.rewriting.pop(rel, None)

    def settle_rewrites(self) -> bool:
        """Settle what an interrupted rewrite left in ``rewriting``: a file that is now the
        new one gets its description, one still the old one loses the mark, and a mark for
        a file no entry lists any more is dropped. A file that is neither keeps its mark (the
        manifest's check reports it). Returns whether anything changed (then :meth:`save`)."""
        from flowatlas.io.archive import footer_sha256

        changed = False
        listed = self.by_output()
        for rel, new in list(self.rewriting.items()):
            if rel not in listed:
                del self.rewriting[rel]
                changed = True
                continue
            old = listed[rel].output_files[rel]
            path = self.root / rel
            try:
                size = path.stat().st_size
                now = (size, footer_sha256(path, size))
            except (OSError, InputError):
                continue
            if now == (new.get("size"), new.get("footer_sha256")):
                self.replaced(rel, new, listed)
                changed = True
            elif now == (old.get("size"), old.get("footer_sha256")):
                del self.rewriting[rel]
                changed = True
        return changed

    def recover(self) -> list[str]:
        """Delete what interrupted imports left behind; return the paths to import again."""
        redo = []
        for p in list(self.pending.values()):
            remove_outputs(self.root, p.name)
            redo.append(p.path)
        self.pending.clear()
        return redo


def archive_problems(root: Path, files: list[Any], *, content: bool = False) -> list[str]:
    """What is wrong between an archive's files and its import manifest, one line each.

    ``files`` are the archive's :class:`~flowatlas.io.archive.ArchiveFile` s. Problems: an
    import that did not finish (a source still *pending*), a file the manifest lists that is
    missing or changed (size or Parquet footer; with ``content``, the SHA-256 of its bytes
    too, which reads every file), and an import's file the manifest does not list (left by
    an import that died). An archive without a manifest (``flowatlas synth``, files written
    by other tools) has none of these problems.
    """
    root = Path(root)
    if not (root / IMPORT_DIR / MANIFEST_NAME).exists():
        return []
    m = Manifest.open(root)
    problems = [
        f"{p.path}: its import did not finish (pending in {m.path}); "
        "run flowatlas import again to finish it"
        for p in sorted(m.pending.values(), key=lambda p: p.path)
    ]
    by_rel = {f.relpath: f for f in files}
    listed: set[str] = set()
    for e in sorted(m.entries.values(), key=_entry_key):
        expected = dict(e.output_files) or {rel: {} for rel in e.outputs}
        if e.quarantine_file and e.quarantine_file not in expected:
            expected[e.quarantine_file] = {}
        for rel, info in sorted(expected.items()):
            listed.add(rel)
            path = root / rel
            f = by_rel.get(rel)
            new = m.rewriting.get(rel)
            now = (f.size, f.footer_sha256) if f is not None else None
            if new and now == (new.get("size"), new.get("footer_sha256")):
                info = new  # replaced by a rewrite that stopped before it recorded so
            if rel.startswith(IMPORT_DIR + "/"):  # quarantine files: not build input
                if not path.exists():
                    problems.append(f"{path}: in the import manifest but missing")
                elif content and info and sha256_file(path)[0] != info.get("sha256"):
                    problems.append(f"{path}: content differs from the import manifest")
                continue
            if f is None:
                problems.append(f"{path}: in the import manifest but missing")
            elif info and (f.size, f.footer_sha256) != (
                info.get("size"),
                info.get("footer_sha256"),
            ):
                problems.append(
                    f"{path}: changed since it was imported (size or Parquet footer differ "
                    "from the import manifest)"
                )
            elif content and info and sha256_file(path)[0] != info.get("sha256"):
                problems.append(
                    f"{path}: content differs from the import manifest (SHA-256 of its bytes)"
                )
    imported = re.compile(r"^\S+ sha256:[0-9a-f]{64}$")
    for f in files:
        if f.relpath not in listed and imported.match(f.source or ""):
            problems.append(
                f"{f.path}: written by an import but not in the import manifest (left by an "
                "import that did not finish?); run flowatlas import again, or move it away"
            )
    return problems


def remove_outputs(root: Path, name: str) -> None:
    """Delete every archive and quarantine file (finished or ``.tmp``) written under ``name``."""
    patterns = (f"{name}.parquet", f".{name}.parquet.tmp")
    for day_dir in _day_dirs(root):
        for pat in patterns:
            (day_dir / pat).unlink(missing_ok=True)
    qdir = root / IMPORT_DIR / QUARANTINE_DIR
    for pat in patterns:
        (qdir / pat).unlink(missing_ok=True)


def _day_dirs(root: Path) -> Iterator[Path]:
    try:
        for d in sorted(root.iterdir()):
            if d.is_dir() and d.name.startswith("day="):
                yield d
    except FileNotFoundError:
        return


def _entry_key(e: FileEntry) -> tuple[str, str]:
    return e.path, e.sha256


@contextlib.contextmanager
def archive_lock(root: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``ARCHIVE/_import/lock`` for the duration; a second importer gets a clear error."""
    d = Path(root) / IMPORT_DIR
    try:
        d.mkdir(parents=True, exist_ok=True)
        fh = open(d / "lock", "a+")
    except OSError as exc:
        raise OutputError(f"{d}: cannot create: {exc.strerror or exc}") from None
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            yield
            return
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(
                f"{root}: another flowatlas import (or rewrite) is writing this archive "
                f"(lock {d / 'lock'})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


__all__ = [
    "IMPORT_DIR",
    "FileEntry",
    "Manifest",
    "Pending",
    "archive_lock",
    "archive_problems",
    "output_name",
    "remove_outputs",
    "sha256_file",
]
