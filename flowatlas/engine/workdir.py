"""The build's work directory: an on-disk shuffle that bounds memory and makes builds resumable.

Each map task writes its result into its own folder, renamed into place only when complete:

    WORK/signature.json               what the work is valid for (plan digest, partitions, ...)
    WORK/map/<task key>/sums.npz      per-cell sums of one map task (and per interface link
                                      and geography, where the plan tracks them)
    WORK/map/<task key>/rows.u64      its (cell, remote IP, volume) rows, by partition: raw
                                      little-endian uint64, the 4 columns one after the other
    WORK/map/<task key>/offsets.i64   where each IP partition's rows start (raw int64, P + 1;
                                      the last one is n, the length of each column)
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
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from flowatlas.engine.pipeline import Counts, FragmentStats, MapResult, Piece
from flowatlas.errors import OutputError

FORMAT = 4  # 4: map sums per interface link and geography (sums.npz)
#: reducers' counts files: 2: (key, ASN) volumes of the month's full-dimension keys only
REDUCE_FORMAT = 2
#: the columns of rows.u64, in order (cell keys stored as their uint64 bit patterns)
ROW_FIELDS = ("cell", "hi", "lo", "vol")
#: a map task's rows, in its folder
ROWS_FILE = "rows.u64"


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
        self._spans: dict[str, tuple[str, np.ndarray]] = {}
        self._dropping: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the offsets read so far stay with this process: a Dask worker reads its own
        return {k: v for k, v in self.__dict__.items() if k not in ("_spans", "_dropping")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _spans={}, _dropping=None)

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
            _write_columns(tmp / ROWS_FILE, [getattr(rows, f) for f in ROW_FIELDS])
            (tmp / "offsets.i64").write_bytes(np.asarray(bounds, dtype="<i8").tobytes())
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

    def load_map_head(self, key: str) -> MapResult:
        """A map task's sums and accounting (not its rows)."""
        d = self._map_dir(key)
        with np.load(d / "sums.npz") as z:
            keys, sums = z["cell_keys"], z["cell_sums"]
            link = (z["link_keys"], z["link_sums"]) if "link_keys" in z.files else None
            geo = (z["geo_keys"], z["geo_sums"]) if "geo_keys" in z.files else None
        stats = FragmentStats(**json.loads((d / "stats.json").read_text()))
        return MapResult(keys, sums, [], stats, link_sums=link, geo_sums=geo)

    def load_partition(self, keys: list[str], j: int) -> Piece:
        """IP partition ``j``'s rows of the map tasks ``keys``, joined in that order.

        Each task's slice of each column is read straight into the joined arrays (no memory
        map, no second copy), one ``pread`` a column. Each task's offsets are read once per
        process and kept: at 10^9 records (334 partitions, 552 map tasks) reading them again
        for every (partition, task) pair, through pathlib, cost about 60 us a pair, 11 CPU s
        of GIL-bound Python a build.
        """
        spans = [self._offsets(key) for key in keys]
        total = sum(int(off[j + 1] - off[j]) for _, off in spans)
        cols = [np.empty(total, np.uint64) for _ in ROW_FIELDS]
        at = 0
        for path, off in spans:
            a, b = int(off[j]), int(off[j + 1])
            if b > a:
                _read_columns(path, int(off[-1]), a, b, [c[at:] for c in cols])
            at += b - a
        return Piece(cols[0].view(np.int64), cols[1], cols[2], cols[3])

    def _offsets(self, key: str) -> tuple[str, np.ndarray]:
        """(path of task ``key``'s rows file, its partition offsets), read once and kept."""
        got = self._spans.get(key)
        if got is None:
            d = self._map_dir(key)
            offsets = np.fromfile(d / "offsets.i64", dtype="<i8")
            rows = str(d / ROWS_FILE)
            size = os.stat(rows).st_size
            if size != 8 * int(offsets[-1]) * len(ROW_FIELDS):
                raise OSError(
                    f"{rows}: {size} bytes, expected {8 * int(offsets[-1]) * len(ROW_FIELDS)}"
                )
            got = self._spans[key] = (rows, offsets)
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
        with np.load(self._reduce_path(j), allow_pickle=False) as z:
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


def _write_columns(path: Path, columns: list[np.ndarray]) -> None:
    """Write equal-length 8-byte columns one after the other as raw little-endian uint64.

    Each column goes out as it is (no interleaving copy, no header to parse back).
    """
    with open(path, "wb") as f:
        for c in columns:
            # written through the file object, not ndarray.tofile: a full disk is then an
            # OSError with its errno (ENOSPC), not "N requested and M written"
            f.write(memoryview(np.ascontiguousarray(c).view(np.uint64).astype("<u8", copy=False)))


def _read_columns(path: str, n: int, a: int, b: int, into: list[np.ndarray]) -> None:
    """Read rows ``a:b`` of each of a ``_write_columns`` file's n-row columns into ``into``
    (its size checked by the caller): one ``pread`` a column, no seeks, no file object."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for c, dest in enumerate(into):
            view = memoryview(dest[: b - a]).cast("B")
            if os.preadv(fd, [view], 8 * (c * n + a)) != view.nbytes:
                raise OSError(f"{path}: truncated")
            if sys.byteorder == "big":  # pragma: no cover - the files are little-endian
                dest[: b - a].byteswap(inplace=True)
    finally:
        os.close(fd)
