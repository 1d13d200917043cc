"""The build's work directory: an on-disk shuffle that bounds memory and makes builds resumable.

Each map task writes its result into its own folder, renamed into place only when complete:

    WORK/signature.json               what the work is valid for (plan digest, partitions, ...)
    WORK/map/<task key>/sums.npz      per-cell sums of one map task (and per interface link
                                      and geography, where the plan tracks them)
    WORK/map/<task key>/rows.bin      its (cell, remote IP, volume) rows: one block an IP
                                      partition, each column as narrow as the task's values
                                      allow (:mod:`flowatlas.kernels.shuffle`)
    WORK/map/<task key>/index.i64     raw int64: where each partition's rows start (P + 1,
                                      the last one the task's rows), where its block starts
                                      in rows.bin (P + 1, the last one the file's size), its
                                      IPv6 rows (P), then the task's cell base, cell bytes
                                      and volume high bytes
    WORK/map/<task key>/stats.json    record accounting
    WORK/reduce/0007-<set>.npz        the distinct counts of IP partition 7 over one task set

A task's key is a hash of exactly what it reads (file, row groups, the file's footer hash), so
a result can only be reused for the same input. Reducers read their partition's slice of
every map file (straight into its own arrays, one copy), so a reducer holds only 1/P of the
distinct rows: archives larger than memory build with bounded memory.

Reuse is what makes builds resumable and incremental: an interrupted build leaves complete
task folders behind and the next build redoes only what is missing; a cube built with
``keep_state`` keeps this directory as ``CUBE/_state``, and a later ``incremental`` build
maps only the archive files that are new or changed, then recounts the distinct rows of all
of them (nothing is counted twice, and exact rollups stay exact).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowatlas.engine.pipeline import Counts, FragmentStats, MapResult, Piece
from flowatlas.errors import InputError, OutputError
from flowatlas.kernels.shuffle import decode_blocks, encode_rows

#: 4: map sums per interface link and geography (sums.npz); 5: narrow rows (rows.bin)
FORMAT = 5
#: reducers' counts files: 2: (key, ASN) volumes of the month's full-dimension keys only
REDUCE_FORMAT = 2
#: a map task's rows, in its folder, and their index (see the module docstring)
ROWS_FILE = "rows.bin"
INDEX_FILE = "index.i64"


@dataclass(frozen=True)
class _Span:
    """A map task's rows file and its index (module docstring), split into its parts."""

    path: str
    rows: np.ndarray  # where each partition's rows start (P + 1)
    blocks: np.ndarray  # where each partition's block starts in the file (P + 1)
    n6: np.ndarray  # each partition's IPv6 rows (P)
    widths: np.ndarray  # cell base, cell bytes, volume high bytes


def default_workdir(out: Path) -> Path:
    """Where a build of ``out`` keeps its work: a hidden sibling of the cube."""
    return out.parent / f".{out.name}.work"


class WorkDir:
    """One build's work directory (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        signature: dict[str, Any],
        *,
        drop_archive_pages: bool = False,
    ) -> None:
        """``drop_archive_pages``: each map task drops the archive's pages it read from the
        page cache (:func:`map_step`); for archives that, with their shuffle, do not fit in
        memory, so that the shuffle stays cached for the reducers instead."""
        self.root = Path(root)
        self.drop_archive_pages = drop_archive_pages
        self.signature = dict(signature, format=FORMAT)
        self.digest = hashlib.sha256(
            json.dumps(self.signature, sort_keys=True).encode()
        ).hexdigest()
        self._spans: dict[str, _Span] = {}
        self._stacks: dict[tuple[str, ...], tuple] = {}
        self._dropping: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the offsets read so far stay with this process: a Dask worker reads its own
        local = ("_spans", "_stacks", "_dropping")
        return {k: v for k, v in self.__dict__.items() if k not in local}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _spans={}, _stacks={}, _dropping=None)

    @staticmethod
    def read_signature(root: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The signature stored in a work directory (or cube state), or None."""
        try:
            return json.loads((Path(root) / "signature.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    # ------------------------------------------------------------------ lifecycle
    def open(self, keys: list[str], keep_rows: bool = False) -> int:
        """Create the directory, or keep the one there if its signature matches.

        Map results not among ``keys`` (the tasks of this build) are dropped. Returns how
        many of ``keys`` are already complete (0 for a fresh start).

        A map result whose rows file is gone (:meth:`drop_rows`: a build killed after its
        reducers) is complete only while every reducer's counts of this task set are saved,
        so that no reducer needs its rows; otherwise, or where ``keep_rows`` (a
        ``keep_state`` build, whose state must hold every task's rows), it is mapped again.
        """
        sig = self.root / "signature.json"
        if self.root.exists():
            old = self.read_signature(self.root)
            if old is None and self.root.is_dir() and any(self.root.iterdir()):
                # never delete what a build did not write (a mistyped --work-dir)
                raise OutputError(
                    f"{self.root}: not a flowatlas work directory (no signature.json) and not "
                    "empty; name a new or empty directory"
                )
            if old is not None and old.get("digest") != self.digest:
                self.remove()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not sig.exists():  # first, so that what follows is known to be ours
                tmp = sig.with_suffix(".tmp")
                tmp.write_text(json.dumps({"digest": self.digest, **self.signature}, indent=1))
                os.replace(tmp, sig)
            (self.root / "map").mkdir(exist_ok=True)
            (self.root / "reduce").mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"{self.root}: cannot write the build's work directory: {exc}"
            ) from None
        self.keys = list(keys)
        wanted = set(keys)
        for d in (self.root / "map").iterdir():
            if d.name not in wanted:  # another archive's tasks, or an unfinished temp
                shutil.rmtree(d, ignore_errors=True)
        # the reducers' output format is part of the set: counts an older build left behind
        # are recounted from the (reused) map results, not read with another meaning
        tagged = "\n".join([*keys, f"reduce format {REDUCE_FORMAT}"])
        self.task_set = hashlib.sha256(tagged.encode()).hexdigest()[:16]
        for f in (self.root / "reduce").iterdir():
            if not f.name.endswith(f"-{self.task_set}.npz"):
                f.unlink(missing_ok=True)
        parts = self.signature.get("partitions")
        counted = isinstance(parts, int) and all(self.reduce_done(j) for j in range(parts))
        if keep_rows or not counted:
            for k in keys:
                if self.map_done(k) and not (self._map_dir(k) / ROWS_FILE).exists():
                    shutil.rmtree(self._map_dir(k), ignore_errors=True)
        return sum(1 for k in keys if self.map_done(k))

    def drop_rows(self) -> None:
        """Start removing every map task's rows file, on a thread of its own.

        For a build whose reducers have all saved their counts and that keeps no state:
        what a resumed build still reads (the map heads, the counts) stays until
        :meth:`remove`, which waits for this thread. At 10^9 records the rows are 24.5 GiB
        whose removal (the page cache's pages freed, the disk's blocks discarded) took 7 s
        of the build's end with nothing else running; it now overlaps the cube's writing.
        """
        self._spans.clear()
        self._stacks.clear()
        keys = list(self.keys)
        self._dropping = threading.Thread(
            target=_unlink_rows, args=(self.root, keys), name="flowatlas-drop-rows"
        )
        self._dropping.start()

    def _wait_for_drop(self) -> None:
        if self._dropping is not None:
            self._dropping.join()
            self._dropping = None

    def remove(self) -> None:
        self._wait_for_drop()
        shutil.rmtree(self.root, ignore_errors=True)

    def as_state(self) -> Path:
        """Trim the directory to what a later incremental build can reuse; return its path."""
        self._wait_for_drop()
        shutil.rmtree(self.root / "reduce", ignore_errors=True)
        (self.root / "reduce").mkdir()
        return self.root

    # ------------------------------------------------------------------ maps
    def _map_dir(self, key: str) -> Path:
        return self.root / "map" / key

    def map_done(self, key: str) -> bool:
        return self._map_dir(key).is_dir()

    def save_map(self, key: str, result: MapResult) -> None:
        """Write a map task's result atomically (a folder renamed into place)."""
        final = self._map_dir(key)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{id(result)}.tmp")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            extra = {}
            for name, part in (("link", result.link_sums), ("geo", result.geo_sums)):
                if part is not None:
                    extra[f"{name}_keys"], extra[f"{name}_sums"] = part
            np.savez(
                tmp / "sums.npz", cell_keys=result.cell_keys, cell_sums=result.cell_sums, **extra
            )
            rows, bounds = result.rows, result.bounds
            if rows is None:  # pieces built some other way: join them once
                rows = Piece.concat(result.pieces)
                sizes = [p.cell.size for p in result.pieces]
                bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            blocks, starts, n6, widths = encode_rows(rows.cell, rows.hi, rows.lo, rows.vol,
                                                     bounds)  # fmt: skip
            with open(tmp / ROWS_FILE, "wb") as f:
                # through the file object, not ndarray.tofile: a full disk is then an OSError
                # with its errno (ENOSPC), not "N requested and M written"
                f.write(memoryview(blocks))
            index = np.concatenate([bounds, starts, n6, widths]).astype("<i8")
            (tmp / INDEX_FILE).write_bytes(index.tobytes())
            (tmp / "stats.json").write_text(json.dumps(asdict(result.stats)))
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise self._write_error(exc) from None
        try:
            os.replace(tmp, final)
        except OSError:  # another worker finished the same task first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)

    def _write_error(self, exc: OSError) -> OutputError:
        """A failed write of the work directory (a full disk) as one line."""
        return OutputError(
            f"{self.root}: cannot write the build's work directory: {exc.strerror or exc}; "
            "free space (or give --work-dir elsewhere) and build again: finished map tasks "
            "are reused"
        )

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """What a build wrote here and reads back, failing to read (a file truncated,
        removed or changed by hand, a disk error) as one line that says what to do, not a
        traceback: the directory is the build's own, so the remedy is to drop it."""
        try:
            yield
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(
                f"{self.root}: damaged work directory ({exc}); remove it (or give another "
                "--work-dir) and build again"
            ) from None

    def load_map_head(self, key: str) -> MapResult:
        """A map task's sums and accounting (not its rows)."""
        with self._reading():
            return self._load_map_head(key)

    def _load_map_head(self, key: str) -> MapResult:
        d = self._map_dir(key)
        with np.load(d / "sums.npz") as z:
            keys, sums = z["cell_keys"], z["cell_sums"]
            link = (z["link_keys"], z["link_sums"]) if "link_keys" in z.files else None
            geo = (z["geo_keys"], z["geo_sums"]) if "geo_keys" in z.files else None
        stats = FragmentStats(**json.loads((d / "stats.json").read_text()))
        return MapResult(keys, sums, [], stats, link_sums=link, geo_sums=geo)

    def load_partition(self, keys: list[str], j: int) -> Piece:
        """IP partition ``j``'s rows of the map tasks ``keys``, joined in that order.

        Each task's block of the partition is read straight into one buffer (one ``pread``
        a task, no memory map), then decoded into the joined arrays in one pass. Each
        task's index is read once per process and kept: at 10^9 records (334 partitions,
        552 map tasks) reading it again for every (partition, task) pair, through pathlib,
        cost about 60 us a pair, 11 CPU s of GIL-bound Python a build.
        """
        with self._reading():
            return self._load_partition(keys, j)

    def _load_partition(self, keys: list[str], j: int) -> Piece:
        paths, rows_at, blocks_at, n6_of, widths = self._stacked(keys)
        sizes = blocks_at[:, j + 1] - blocks_at[:, j]
        starts = np.zeros(len(keys) + 1, np.int64)
        np.cumsum(sizes, out=starts[1:])
        rows, n6 = rows_at[:, j + 1] - rows_at[:, j], n6_of[:, j]
        # blocks are whole 8-byte words: in a buffer of words, each starts aligned
        buf = np.empty(int(starts[-1]) // 8, np.uint64).view(np.uint8)
        for path, a, at, size in zip(
            paths, blocks_at[:, j].tolist(), starts[:-1].tolist(), sizes.tolist(), strict=True
        ):
            if size:
                _read_block(path, a, buf[at : at + size])
        try:
            cell, hi, lo, vol = decode_blocks(buf, starts, rows, n6, widths)
        except ValueError as exc:
            raise ValueError(f"partition {j}: {exc}") from None
        return Piece(cell, hi, lo, vol)

    def _stacked(
        self, keys: list[str]
    ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The indexes of the tasks ``keys`` stacked, one row a task: (rows files, row
        starts, block starts, IPv6 rows, widths), made once per list of keys and kept (the
        reducers of a build all read the same tasks)."""
        tag = tuple(keys)
        got = self._stacks.get(tag)
        if got is None:
            spans = [self._offsets(key) for key in keys]
            parts = max((sp.n6.size for sp in spans), default=0)
            if any(sp.n6.size != parts for sp in spans):
                raise ValueError("map tasks of different partition counts")
            got = (
                [sp.path for sp in spans],
                np.array([sp.rows for sp in spans], np.int64).reshape(-1, parts + 1),
                np.array([sp.blocks for sp in spans], np.int64).reshape(-1, parts + 1),
                np.array([sp.n6 for sp in spans], np.int64).reshape(-1, parts),
                np.array([sp.widths for sp in spans], np.int64).reshape(-1, 3),
            )
            self._stacks[tag] = got
        return got

    def _offsets(self, key: str) -> _Span:
        """Task ``key``'s rows file and index, read once and kept."""
        got = self._spans.get(key)
        if got is None:
            d = self._map_dir(key)
            index = np.fromfile(d / INDEX_FILE, dtype="<i8")
            parts = (index.size - 5) // 3
            if index.size != 3 * parts + 5 or parts < 1:
                raise OSError(f"{d / INDEX_FILE}: {index.size} numbers, not 3 P + 5")
            rows = str(d / ROWS_FILE)
            blocks = index[parts + 1 : 2 * parts + 2]
            size = os.stat(rows).st_size
            if size != int(blocks[-1]):
                raise OSError(f"{rows}: {size} bytes, expected {int(blocks[-1])}")
            got = self._spans[key] = _Span(
                rows, index[: parts + 1], blocks, index[2 * parts + 2 : 3 * parts + 2],
                index[3 * parts + 2 :],
            )  # fmt: skip
        return got

    # ------------------------------------------------------------------ reduces
    def _reduce_path(self, j: int) -> Path:
        return self.root / "reduce" / f"{j:04d}-{self.task_set}.npz"

    def reduce_done(self, j: int) -> bool:
        return self._reduce_path(j).exists()

    def save_counts(self, j: int, counts: Counts) -> None:
        """Write a reducer's counts atomically (plain arrays, no pickles)."""
        arrays: dict[str, np.ndarray] = {
            "cell_keys": counts.cell_keys,
            "cell_counts": counts.cell_counts,
        }
        for r in counts.rollup_keys:
            arrays[f"rk.{r}"] = counts.rollup_keys[r]
            arrays[f"rc.{r}"] = counts.rollup_counts[r]
        for r, (h, lo) in counts.rollup_sq.items():
            arrays[f"sqh.{r}"], arrays[f"sql.{r}"] = h, lo
        for r, parts in counts.top_ips.items():
            for k, a in enumerate(parts):
                arrays[f"top{k}.{r}"] = a
        for r, parts in counts.asn_volume.items():
            for k, a in enumerate(parts):
                arrays[f"asn{k}.{r}"] = a
        if counts.sketch is not None:
            arrays["sketch_keys"], arrays["sketch_entries"] = counts.sketch
        final = self._reduce_path(j)
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp.npz")
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._write_error(exc) from None

    def load_counts(self, j: int) -> Counts:
        """Reducer ``j``'s saved counts."""
        with self._reading(), np.load(self._reduce_path(j), allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        rollups = sorted(k.split(".", 1)[1] for k in a if k.startswith("rk."))
        counts = Counts(
            a["cell_keys"],
            a["cell_counts"],
            {r: a[f"rk.{r}"] for r in rollups},
            {r: a[f"rc.{r}"] for r in rollups},
        )
        for r in rollups:
            if f"sqh.{r}" in a:
                counts.rollup_sq[r] = (a[f"sqh.{r}"], a[f"sql.{r}"])
            if f"top0.{r}" in a:
                counts.top_ips[r] = tuple(a[f"top{k}.{r}"] for k in range(4))
            if f"asn0.{r}" in a:
                counts.asn_volume[r] = tuple(a[f"asn{k}.{r}"] for k in range(3))
        if "sketch_keys" in a:
            counts.sketch = (a["sketch_keys"], a["sketch_entries"])
        return counts


def task_key(fragments: list, footers: dict[str, str]) -> str:
    """A map task's identity: what it reads (files, row groups, the files' footer hashes)."""
    parts = [[f.path, list(f.row_groups), footers[f.path]] for f in fragments]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def map_step(key: str, fragments: list, plan: Any, work: WorkDir) -> MapResult:
    """A map task through the work directory: computed once, then read back."""
    from flowatlas.engine.pipeline import map_task

    if not work.map_done(key):
        result = map_task(fragments, plan)
        if work.drop_archive_pages:
            drop_read_pages(fragments)
        work.save_map(key, result)
        return result.head()
    return work.load_map_head(key)


def drop_read_pages(fragments: list) -> None:
    """Tell the kernel that the fragments' row groups will not be read again
    (``posix_fadvise(DONTNEED)`` on each one's bytes): their pages leave the page cache now.

    At 10^9 records the archive (28.9 GiB) streamed through the page cache and pushed out
    the shuffle written beside it (24.5 GiB, 23.6 GiB of memory), which the reducers then
    read back from the disk. Only the row groups' own bytes: another task may still be
    reading the same file's other row groups. Fragments without a parsed footer (or where
    there is no ``posix_fadvise``) are left as they are.
    """
    advise = getattr(os, "posix_fadvise", None)
    for f in fragments:
        md = getattr(f, "metadata", None)
        if advise is None or md is None or not f.row_groups:
            continue
        spans = sorted(_row_group_span(md.row_group(i)) for i in f.row_groups)
        try:
            fd = os.open(f.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            start, end = spans[0]
            for a, b in [*spans[1:], (-1, -1)]:
                if a == end:  # consecutive row groups: one call
                    end = b
                    continue
                advise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
                start, end = a, b
        except OSError:  # advice only: a build never fails for it
            pass
        finally:
            os.close(fd)


def _row_group_span(rg: Any) -> tuple[int, int]:
    """(first byte, end) of a Parquet row group's column chunks in its file."""
    start, end = None, 0
    for c in range(rg.num_columns):
        col = rg.column(c)
        a = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
        start = a if start is None else min(start, a)
        end = max(end, a + col.total_compressed_size)
    return (start or 0, end)


def reduce_step(j: int, keys: list[str], plan: Any, work: WorkDir, *_maps_done: Any) -> int:
    """Reducer ``j`` through the work directory (its map inputs must be complete).

    Returns ``j``: the counts stay on disk until the combiner reads them, one at a time.
    """
    if not work.reduce_done(j):
        _reduce_and_save(j, keys, plan, work)
    return j


def reduce_counts(j: int, keys: list[str], plan: Any, work: WorkDir) -> Counts:
    """Reducer ``j`` through the work directory, for a runner in this process: its counts
    returned as well as saved (a resumed build reads back the ones already done).

    The in-process runner folds them straight in: reading each reducer's counts back from
    disk cost about 4 ms a partition at 184 days (1.4 CPU s of a 10^9-record build).
    """
    if work.reduce_done(j):
        return work.load_counts(j)
    return _reduce_and_save(j, keys, plan, work)


def _reduce_and_save(j: int, keys: list[str], plan: Any, work: WorkDir) -> Counts:
    """Reduce partition ``j`` from the map files and save its counts (for resuming)."""
    from flowatlas.engine.pipeline import reduce_partition

    counts = reduce_partition([work.load_partition(keys, j)], plan)
    work.save_counts(j, counts)
    return counts


def _unlink_rows(root: Path, keys: list[str]) -> None:
    """Remove the rows file of each of the map tasks ``keys`` (those already gone skipped)."""
    for k in keys:
        with contextlib.suppress(OSError):
            os.unlink(root / "map" / k / ROWS_FILE)


def _read_block(path: str, a: int, into: np.ndarray) -> None:
    """Read bytes ``a:a + into.size`` of file ``path`` into ``into``: one ``pread``, no
    seeks, no file object."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.preadv(fd, [memoryview(into)], a) != into.nbytes:
            raise OSError(f"{path}: truncated")
    finally:
        os.close(fd)
