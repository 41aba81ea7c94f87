"""What ``mint-bridge run`` shows of long transfers.

- On a terminal: a live bar per file (tqdm) with bytes, rate and time left.
- Elsewhere (a MInt module's log is a file): one line when a big file starts, one every
  ``interval`` seconds or quarter of the file, and one when it is done, each starting with the
  job id like every other line of ours.

Small files are over before anyone could read a bar, so bars and lines are kept for files of
at least ``MIN_SHOWN`` bytes.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from bridge.core.progress import Transfer, Watcher

MIN_SHOWN = 8 << 20
LINE_INTERVAL = 30.0  # seconds between lines of one file in a log
LINE_STEP = 0.25  # and a line at each quarter
_VERB = {"in": ("sending", "sent"), "out": ("receiving", "received")}


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_rate(count: float, seconds: float) -> str:
    if seconds <= 0:
        return "-"
    return f"{count / seconds / 1e6:.0f} MB/s"


class Watchers:
    """Several watchers as one."""

    def __init__(self, *watchers: Watcher) -> None:
        self.watchers = watchers

    def started(self, transfer: Transfer) -> None:
        for watcher in self.watchers:
            watcher.started(transfer)

    def advanced(self, transfer: Transfer) -> None:
        for watcher in self.watchers:
            watcher.advanced(transfer)

    def ended(self, transfer: Transfer) -> None:
        for watcher in self.watchers:
            watcher.ended(transfer)


@dataclass
class LineProgress:
    """Line-oriented progress for logs: start, every ``interval`` s or ``step``, end."""

    job_id: str
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    interval: float = LINE_INTERVAL
    step: float = LINE_STEP
    min_shown: int = MIN_SHOWN
    _next_time: float = 0.0
    _next_fraction: float = 0.0

    def started(self, transfer: Transfer) -> None:
        if transfer.size < self.min_shown:
            return
        self._next_time = time.monotonic() + self.interval
        self._next_fraction = self.step
        verb = _VERB[transfer.direction][0]
        self._say(f"{verb} {transfer.name} ({human_bytes(transfer.size)})")

    def advanced(self, transfer: Transfer) -> None:
        if transfer.size < self.min_shown or transfer.done >= transfer.size:
            return
        fraction = transfer.done / transfer.size
        now = time.monotonic()
        if fraction < self._next_fraction and now < self._next_time:
            return
        while self._next_fraction <= fraction:
            self._next_fraction += self.step
        self._next_time = now + self.interval
        seconds = transfer.seconds
        left = seconds * (transfer.size - transfer.done) / transfer.done if transfer.done else 0
        verb = _VERB[transfer.direction][0]
        self._say(
            f"{verb} {transfer.name}: {human_bytes(transfer.done)} of "
            f"{human_bytes(transfer.size)} ({fraction:.0%}), "
            f"{human_rate(transfer.done, seconds)}, about {left:.0f} s left"
        )

    def ended(self, transfer: Transfer) -> None:
        if transfer.size < self.min_shown:
            return
        if not transfer.ok:
            verb = _VERB[transfer.direction][0]
            self._say(f"{verb} {transfer.name} stopped at {human_bytes(transfer.done)}")
            return
        verb = _VERB[transfer.direction][1]
        self._say(
            f"{verb} {transfer.name}: {human_bytes(transfer.size)} in {transfer.seconds:.1f} s "
            f"({human_rate(transfer.size, transfer.seconds)})"
        )

    def _say(self, text: str) -> None:
        self.stream.write(f"mint-bridge: {self.job_id}: {text}\n")
        self.stream.flush()


def _columns(stream: TextIO) -> int | None:
    """The terminal's width, or 80 where it reports none (a fresh pseudo-terminal says 0, on
    which tqdm would draw an empty bar); None lets tqdm ask itself."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class BarProgress:
    """A live bar per big file on a terminal."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    min_shown: int = MIN_SHOWN
    _bar: Any = None

    def started(self, transfer: Transfer) -> None:
        if transfer.size < self.min_shown:
            return
        from tqdm import tqdm  # only where a terminal shows it

        arrow = "→" if transfer.direction == "in" else "←"
        self._bar = tqdm(
            total=transfer.size, unit="B", unit_scale=True, unit_divisor=1024,
            desc=f"{arrow} {transfer.name}", file=self.stream, leave=True, mininterval=0.2,
            ncols=_columns(self.stream),
        )  # fmt: skip

    def advanced(self, transfer: Transfer) -> None:
        if self._bar is not None:
            self._bar.update(transfer.done - self._bar.n)

    def ended(self, transfer: Transfer) -> None:
        if self._bar is not None:
            self._bar.update(transfer.done - self._bar.n)
            self._bar.close()
            self._bar = None


def watcher_for(mode: str, job_id: str, stream: TextIO) -> Watcher | None:
    """``mode``: auto (a bar on a terminal, lines elsewhere), bar, lines or none."""
    if mode == "auto":
        mode = "bar" if stream.isatty() else "lines"
    if mode == "bar":
        return BarProgress(stream)
    if mode == "lines":
        return LineProgress(job_id, stream)
    return None


__all__ = ["BarProgress", "LineProgress", "Watchers", "human_bytes", "watcher_for"]
