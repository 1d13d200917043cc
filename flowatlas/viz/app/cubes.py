"""The cubes a server holds: fixed at start, loaded once, reloaded when replaced on disk.

Pages name cubes by their short name only; no URL ever reaches the file system. When a
cube's files change (``flowatlas build --overwrite`` renames a new directory into place),
the next check loads the new cube; if it cannot be read (half-written, corrupt), the pages
keep the copy already loaded and say it is stale. A check costs two ``stat`` calls and runs
at most every :data:`CHECK_EVERY` seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flowatlas.errors import FlowatlasError, InputError
from flowatlas.viz.query import CubeQuery
from flowatlas.viz.views import cube_name, open_cube_dir

log = logging.getLogger(__name__)

CHECK_EVERY = 2.0
_WATCHED = ("cube.json", "cells.parquet", "rollups.parquet")


def _signature(path: Path) -> tuple:
    out = []
    for name in _WATCHED:
        try:
            st = os.stat(path / name)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def load(path: Path, name: str) -> CubeQuery:
    """Open a cube and read everything a page may ask for (top lists, sketches) now."""
    cube = open_cube_dir(path)
    q = CubeQuery(cube, name)
    for period in cube.meta.get("top_list_rollups", [])[-1:]:
        cube.top_ips(period=period)
        cube.top_asns(period=period)
    if cube.meta.get("sketch") and q.first_day is not None:  # reads and caches the sketches
        cube.estimate_uniques(by=("region",), start=q.first_day, end=q.first_day)
    return q


@dataclass
class _Entry:
    path: Path
    label: str  # the name pages show
    query: CubeQuery
    signature: tuple
    loaded_at: float
    checked_at: float
    stale: str | None = None  # why the copy in memory no longer matches the disk


class CubeSet:
    """Named cubes (and an optional previous one to compare with), read once at start."""

    def __init__(self, paths: Sequence[Path], previous: Path | None = None) -> None:
        if not paths:
            raise InputError("no cube to serve")
        self._entries: dict[str, _Entry] = {}
        for path in paths:
            self._add(Path(path), self._name(Path(path)))
        self.names = [n for n in self._entries if n != self.PREVIOUS]
        self.previous_name = None
        if previous is not None:
            self.previous_name = self.PREVIOUS
            self._add(Path(previous), self.PREVIOUS, f"{cube_name(previous)} (previous)")

    PREVIOUS = "previous"

    def _name(self, path: Path) -> str:
        name = cube_name(path)
        base, i = name, 2
        while name in self._entries or name == self.PREVIOUS:
            name, i = f"{base}-{i}", i + 1
        return name

    def _add(self, path: Path, name: str, label: str | None = None) -> None:
        sig = _signature(path)
        now = time.monotonic()
        label = label or name
        self._entries[name] = _Entry(path, label, load(path, label), sig, time.time(), now)

    def get(self, name: str) -> tuple[CubeQuery, str | None]:
        """The cube named ``name`` (reloaded first if it changed on disk), and a staleness note."""
        e = self._entries[name]
        now = time.monotonic()
        if now - e.checked_at >= CHECK_EVERY:
            e.checked_at = now
            sig = _signature(e.path)
            if sig != e.signature:
                self._reload(name, e, sig)
            elif e.stale:  # the files are back to the copy in memory
                e.stale = None
        return e.query, e.stale

    def previous(self) -> tuple[CubeQuery | None, str | None]:
        """The previous cube (``--previous``), if any."""
        if self.previous_name is None:
            return None, None
        return self.get(self.previous_name)

    def _reload(self, name: str, e: _Entry, sig: tuple) -> None:
        try:
            q = load(e.path, e.label)
        except (FlowatlasError, OSError, ValueError, KeyError) as exc:
            when = time.strftime("%H:%M:%S", time.localtime(e.loaded_at))
            e.stale = (
                f"stale: {e.path} changed on disk and cannot be read now ({exc}); "
                f"showing the copy loaded at {when}"
            )
            log.warning("%s", e.stale)
            return
        e.query, e.signature, e.loaded_at, e.stale = q, sig, time.time(), None
        log.info("reloaded %s from %s", name, e.path)
