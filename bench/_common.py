"""Helpers every flowatlas benchmark shares: the machine, versions, timed runs, tables.

Benchmarks compare flowatlas with other tools in one run on one machine, so every number
needs the same measuring stick. Here it is:

- :func:`run_measured` runs a command in a child process and reports its wall time and the
  peak resident memory of its whole process tree (Dask workers included), polled with psutil
  and cross-checked with the kernel's own high-water mark for the child (``wait4``);
  :class:`PeakRSS` measures the same inside a process, over one block of code;
- :func:`machine` and :func:`versions` say what the numbers were measured on;
- :func:`markdown_table` prints results, and :func:`write_section` puts them into a shared
  results file without touching other benchmarks' sections.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil

MiB = 1 << 20


# --------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    """The CPU model as lscpu names it (falls back to /proc/cpuinfo, then platform)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """What the benchmark ran on: CPU model, usable cores, memory, OS, Python."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": f"{usable} usable ({psutil.cpu_count(logical=True)} logical)",
        "memory": f"{psutil.virtual_memory().total / (1 << 30):.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def git_revision(repo: str | os.PathLike[str]) -> str:
    """The checkout's commit, with "+ uncommitted changes" when the tree is dirty."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha} + uncommitted changes" if dirty else sha


def load_average() -> str:
    """The 1-minute load average against the usable cores (other work skews timings)."""
    try:
        one = os.getloadavg()[0]
    except OSError:
        return "unknown"
    return f"{one:.2f} on {usable_cores()} cores"


def provenance(
    packages: Sequence[str], load_before: str, reproduce: str, load_after: str | None = None
) -> list[str]:
    """The lines every results section ends with: machine, versions, checkout, load, command
    to reproduce, date (so a number never travels without where it came from)."""
    mach = machine()
    after = load_after if load_after is not None else load_average()
    return [
        f"- machine: {mach['cpu']}, {mach['cores']}, {mach['memory']} RAM, {mach['os']}, "
        f"Python {mach['python']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions(*packages).items()),
        f"- flowatlas checkout: {git_revision(Path(__file__).resolve().parent.parent)}",
        f"- load average (1 min) before / after: {load_before} / {after}",
        f"- reproduce: `{reproduce}`",
        f"- run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


def versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the named distributions ("not installed" where absent)."""
    out = {}
    for name in distributions:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    """One timed run of a command."""

    seconds: float  # wall time from spawn to exit
    peak_rss: int  # bytes: peak of the summed RSS of the process and all its descendants
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system time of the child and its reaped descendants

    def check(self, what: str) -> Measurement:
        """Raise with the command's stderr if it failed."""
        if self.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {self.returncode}):\n{self.stderr[-4000:]}")
        return self


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass  # exited between listing and reading
    return total


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    poll_seconds: float = 0.01,
    timeout: float | None = None,
) -> Measurement:
    """Run ``argv`` and measure its wall time and the peak RSS of its process tree.

    CPU time (user + system, from ``wait4``) covers the child and the descendants it reaped;
    on a shared machine it moves less than wall time when others compete for the cores.
    The tree is polled every ``poll_seconds``. Short peaks between polls can be missed, so the
    kernel's high-water mark of the child (``wait4``) is used too, but only when it is above
    this process's own size: a forked child inherits its parent's mark across exec, so a
    small tool would otherwise report the benchmark's memory as its own.
    Output is captured to temporary files, so a chatty child never blocks on a full pipe.
    ``PYTHONDONTWRITEBYTECODE`` is dropped (unless ``env`` sets it): an installed package
    has its bytecode cached, and a child that recompiled every module (about 0.13 s for
    flowatlas) would measure this machine's environment, not the tool.
    """
    import tempfile

    full_env = dict(os.environ)
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    if env:
        full_env.update(env)
    inherited = psutil.Process().memory_info().rss  # what a forked child's mark starts from
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(list(argv), stdout=out, stderr=err, env=full_env, cwd=cwd)
        peak = 0
        done = threading.Event()

        def poll() -> None:
            nonlocal peak
            try:
                proc = psutil.Process(child.pid)
            except psutil.Error:
                return
            while not done.is_set():
                peak = max(peak, _tree_rss(proc))
                done.wait(poll_seconds)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        done.set()
        poller.join()
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        high_water = usage.ru_maxrss * 1024  # KiB on Linux
        if high_water <= inherited * 1.05:
            high_water = 0  # the parent's mark, not the child's
        return Measurement(
            seconds,
            max(peak, high_water),
            child.returncode,
            out.read(),
            err.read(),
            usage.ru_utime + usage.ru_stime,
        )


class PeakRSS:
    """Peak resident memory of this process (every thread) over a ``with`` block.

    For timings taken inside a process (``--from-memory``: the records are loaded first, then
    only the computation is measured). The kernel's high-water mark is reset on entry where
    Linux allows it (``/proc/self/clear_refs``) and read on exit; psutil polls every
    ``poll_seconds`` as well, so the peak is right where the reset is not available. Child
    processes are not counted. ``peak`` holds the result (bytes) after the block.
    """

    def __init__(self, poll_seconds: float = 0.01) -> None:
        self.poll_seconds = poll_seconds
        self.peak = 0
        self._done = threading.Event()
        self._reset = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM)
            self._reset = True
        except OSError:
            self._reset = False
        proc = psutil.Process()
        self.peak = proc.memory_info().rss

        def poll() -> None:
            while not self._done.is_set():
                self.peak = max(self.peak, proc.memory_info().rss)
                self._done.wait(self.poll_seconds)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)
        if self._reset:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)


# --------------------------------------------------------------------------- reporting


def build_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The arguments of a benchmark that builds one archive in its own process, as
    ``flowatlas build`` takes them: the archive, ``--table``, ``--workers``, and ``--out``
    (default ``out``)."""
    parser.add_argument("archive", type=Path)
    parser.add_argument("--table", type=Path, help="compiled prefix table (.fatable)")
    parser.add_argument("--workers", type=int, default=None, help="as flowatlas build [cores]")
    parser.add_argument("--out", type=Path, default=Path(out))


def best_of(fn: Callable[[], object], repeat: int, clock=time.perf_counter) -> float:
    """Shortest of ``repeat`` runs by ``clock`` (wall time, or this thread's CPU time: on a
    shared machine CPU time is what one core delivers when it is not time-sliced away)."""
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded so it also reads as plain text."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def write_section(path: str | os.PathLike[str], heading: str, body: str) -> None:
    """Put ``## heading`` with ``body`` into the results file ``path``.

    Only that section changes: if it exists it is replaced (up to the next ``## `` heading),
    otherwise it is appended. Other benchmarks' sections are left byte for byte as they were.
    """
    path = Path(path)
    section = f"## {heading}\n\n{body.rstrip()}\n"
    text = path.read_text() if path.exists() else "# flowatlas benchmark results\n"
    pattern = re.compile(rf"^## {re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def mib(nbytes: float) -> str:
    """Bytes as MiB with no decimals (what the tables print)."""
    return f"{nbytes / MiB:,.0f}"


def rate(count: float, seconds: float) -> str:
    """Records per second, rounded to three significant figures."""
    if seconds <= 0:
        return "-"
    r = count / seconds
    return f"{float(f'{r:.3g}'):,.0f}"


# --------------------------------------------------------------------------- cached archives


def archive_layout(archive: str | os.PathLike[str]) -> str:
    """The column layout of a (cached) archive's files, as ``flowatlas inspect`` names it
    ("auto", "zstd", "lz4", "uncompressed"; several joined by ", "), read from the footers."""
    import pyarrow.parquet as pq

    from flowatlas.io.archive import file_layout

    names = {
        file_layout(pq.read_metadata(p))
        for p in Path(archive).rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(archive).parts)
    }
    return ", ".join(sorted(names)) or "none"


#: archives whose layout :func:`check_layout` has noted already (once each)
_NOTED: set[str] = set()


def check_layout(archive: str | os.PathLike[str]) -> str:
    """:func:`archive_layout`, saying so on stdout where it is not the layout new archives
    get (``DEFAULT_COMPRESSION``): an archive cached before "auto" became the default (zstd)
    is used as it is, never as if it had the default layout; delete it to regenerate."""
    from flowatlas.io.archive import DEFAULT_COMPRESSION

    layout = archive_layout(archive)
    if layout != DEFAULT_COMPRESSION and str(archive) not in _NOTED:
        _NOTED.add(str(archive))
        print(
            f"note: {archive}: files in layout {layout}, not the default "
            f"{DEFAULT_COMPRESSION} (cached by an older flowatlas?): measured as they are; "
            "delete the archive to regenerate it in the default layout",
            flush=True,
        )
    return layout
