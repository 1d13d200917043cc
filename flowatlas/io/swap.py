"""Replace a finished output folder so that, whenever the process dies, the old or the new
one is complete at its path.

A command writes its new output into ``.OUT.partial-PID`` beside ``OUT`` and calls
:func:`swap_into_place`. Where the file system has it, the swap is one
``renameat2(RENAME_EXCHANGE)``; elsewhere the old output waits as ``.OUT.old-PID`` between two
renames. :func:`recover_output`, run before the next write to the same ``OUT``, puts an old
output back when the process died between the renames and removes the leftovers of dead
runs, saying so. Cubes (``flowatlas build``) and synthetic archives (``flowatlas synth``)
share this code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from flowatlas.errors import OutputError


class RecoveryWarning(UserWarning):
    """What a run found and repaired of an earlier one that died (printed as one line)."""


def partial_path(out: Path) -> Path:
    """Where this process writes the new output before it is swapped into place."""
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def _old_path(out: Path) -> Path:
    return out.parent / f".{out.name}.old-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def recover_output(out: Path, *, marker: str = "cube.json", what: str = "cube") -> list[str]:
    """Repair what a run writing ``out`` that died left beside it; return what was done.

    If that process (PID in the leftover's name) is not running: with nothing at ``out``, an
    old output (a folder holding ``marker``) is put back; otherwise leftovers are removed.
    Leftovers of a run still going are left alone. Each repair is also a
    :class:`RecoveryWarning`, which the CLI prints as one line.
    """
    done: list[str] = []
    parent = out.parent
    if not parent.is_dir():
        return done
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(old|partial)-(\d+)$")
    prefix = f".{out.name}."
    found = []
    # names first, Paths only for the few that match: the parent may be a large folder
    # (/tmp: a thousand entries took 25 ms as sorted Paths, every build, three times)
    for name in sorted(n for n in os.listdir(parent) if n.startswith(prefix)):
        m = pattern.match(name)
        if m and not _pid_alive(int(m.group(2))):
            found.append((m.group(1), parent / name))
    for kind, entry in sorted(found, key=lambda kv: kv[0] != "old"):  # old ones first
        if kind == "old" and not out.exists() and (entry / marker).exists():
            os.replace(entry, out)
            done.append(
                f"{out}: restored the {what} an interrupted --overwrite had moved to {entry}"
            )
        else:
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"{out}: removed {entry.name}, left by a run that died")
    for line in done:
        warnings.warn(line, RecoveryWarning, stacklevel=2)
    return done


@contextlib.contextmanager
def output_lock(out: Path, *, what: str = "build") -> Iterator[None]:
    """Hold ``.OUT.lock`` beside the output for a whole run: one writer per output at a time.

    A second run writing the same ``out`` fails at once, saying which process holds the lock.
    The lock file is removed when the run ends.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield
        return
    lock = out.parent / f".{out.name}.lock"
    while True:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)  # unbuffered: nothing to flush
        except OSError as exc:
            raise OutputError(f"{lock}: cannot create: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputError(
                f"{out}: another flowatlas {what} is writing it ({holder}; lock {lock})"
            ) from None
        try:  # the holder before us may have removed the file we opened: lock the new one
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # who holds it: for the message only (a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)  # releases the lock


def _fault(point: str) -> None:
    """A named point of the swap; tests replace this to kill the process there."""


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    False where the system or file system cannot: the caller then renames twice.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (after files were renamed into or out of it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def swap_into_place(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` (:func:`partial_path`) at ``out``, replacing what is there.

    Whenever the process dies, ``out`` holds the old output or the new one, complete, or (on
    a file system without ``RENAME_EXCHANGE``, between two renames) the old one waits in
    ``.OUT.old-PID`` for :func:`recover_output`. On an error the old output is put back
    before the ``OSError`` propagates. The replaced output is deleted at the end.
    """
    old = _old_path(out)
    _fault("written")
    try:
        if out.exists():
            if _exchange(tmp, out):  # out: the new output; tmp: the old one
                _fault("swapped")
            else:
                os.replace(out, old)
                _fault("old-moved")
                os.replace(tmp, out)
                _fault("swapped")
        else:
            os.replace(tmp, out)
        fsync_dir(out.parent)
    except OSError:
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # the old output, after an exchange
    shutil.rmtree(old, ignore_errors=True)
