"""Progress of long commands: a moving bar on a terminal, a plain line now and then elsewhere.

Every long command (synth, import, build, classify compile, report, inspect) reports through
one :class:`Progress`, so they all look and behave alike:

- on a terminal, a tqdm bar on stderr: done/total in records, files or tasks, a rate and an
  ETA, redrawn as work completes and erased at the end;
- without a terminal (CI logs, cron, a pipe), a plain line such as
  ``build: 12/40 tasks (30%), 2.1 tasks/s, ETA 13 s`` at most every ``interval`` seconds
  (10 by default), so logs show that work goes on without filling up;
- with ``quiet``, nothing.

The command then prints its own one-line summary. The clock is injectable so that the
plain-line mode is tested without sleeping.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

#: seconds between two plain progress lines (no terminal)
PLAIN_INTERVAL = 10.0
#: units counted in thousands and millions on the bar (k, M); others are shown whole
SCALED_UNITS = ("records", "bytes")


def _duration(seconds: float) -> str:
    """A short human duration: '45 s', '3 min 20 s', '2 h 05 min'."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _count(n: float) -> str:
    return f"{int(n):,}"


class Progress:
    """Report the progress of ``total`` units of work (see the module docstring).

    ``tty`` says whether ``stream`` is a terminal (default: ask it); ``clock`` gives seconds
    (default :func:`time.monotonic`). ``total`` may be 0 (unknown) and set later with
    :meth:`set`. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        desc: str,
        unit: str,
        total: int = 0,
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = PLAIN_INTERVAL,
    ) -> None:
        self.desc = desc
        self.unit = unit
        self.total = int(total)
        self.done = 0
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.clock = clock
        self.interval = interval
        self.start = clock()
        self._last_line = self.start
        self.postfix = ""
        self._bar: Any = None
        if not quiet and tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total or None,
                desc=desc,
                unit=unit,
                unit_scale=unit in SCALED_UNITS,  # 1.2M records, but 3/40 tasks
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                mininterval=0.2,
            )

    # ------------------------------------------------------------------ updates
    def update(self, n: int = 1) -> None:
        """``n`` more units are done."""
        self.set(self.done + int(n))

    def set(
        self, done: int, total: int | None = None, desc: str | None = None, postfix: str = ""
    ) -> None:
        """``done`` units of ``total`` (unchanged if None) are done; ``desc`` renames the stage."""
        self.done = int(done)
        if total is not None:
            self.total = int(total)
        if desc is not None:
            self.desc = desc
        if postfix:
            self.postfix = postfix
        if self.quiet:
            return
        if self._bar is not None:
            if total is not None and self._bar.total != self.total:
                self._bar.total = self.total or None
            if desc is not None:
                self._bar.set_description_str(desc, refresh=False)
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(self.done - self._bar.n)
            return
        now = self.clock()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """The plain progress line: done/total, share, rate and ETA (as far as known)."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.desc}: {_count(self.done)}"]
        if self.total:
            parts[0] += f"/{_count(self.total)} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:,.1f} {self.unit}/s" if rate < 100 else f"{rate:,.0f} {self.unit}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        parts.append(f"{_duration(now - self.start)} elapsed")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    @property
    def elapsed(self) -> float:
        """Seconds since the reporter started."""
        return self.clock() - self.start

    # ------------------------------------------------------------------ the end
    def close(self) -> None:
        """Erase the bar (the command prints its own summary line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_progress(bar: Progress, say: Callable[[str], None]) -> Callable[[str, int, int], None]:
    """The ``progress(stage, done, total)`` callback of ``build_cube`` drawn on ``bar``.

    ``resume`` (map tasks found complete in the work directory) is said once with ``say``;
    ``map`` and ``reduce`` move the bar over all tasks, naming the stage.
    """

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "resume":
            say(f"reusing {done:,} of {total:,} map tasks already done")
            return
        bar.set(done, total, f"build: {stage}")

    return progress


__all__ = ["PLAIN_INTERVAL", "Progress", "build_progress"]
