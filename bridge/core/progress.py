"""How far each file transfer has got, for whoever watches.

The client wraps each file it sends or receives in ``with transfer(direction, name, size)``;
the loops that move the bytes (frames over SSH, PATCH and GET at the broker) call ``moved(n)``
or ``reached(offset)`` for the transfer in progress. Nobody watches unless an entry point says
so with ``watching(watcher)`` (``mint-bridge run`` does), so the site entry and the agent, which
share these loops, pay one global read per chunk.

The watcher is one per process (the entry point's); the transfer in progress is one per
thread, since the loops run in the thread that opened it, and another thread of the same
process (an agent's jobs, a test's) must neither count into it nor see it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

Direction = Literal["in", "out"]  # "in": towards the site (inputs); "out": results back


@dataclass
class Transfer:
    """One file on its way: ``done`` bytes of ``size`` so far."""

    direction: Direction
    name: str
    size: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    sha256: str | None = None  # set by the caller once the file is verified
    ok: bool = False

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


class Watcher(Protocol):
    def started(self, transfer: Transfer) -> None: ...

    def advanced(self, transfer: Transfer) -> None: ...

    def ended(self, transfer: Transfer) -> None: ...


_watcher: Watcher | None = None


class _Active(threading.local):
    transfer: Transfer | None = None


_active = _Active()


@contextlib.contextmanager
def watching(watcher: Watcher) -> Iterator[Watcher]:
    """Report every transfer of this process to ``watcher`` inside the block."""
    global _watcher
    previous, _watcher = _watcher, watcher
    try:
        yield watcher
    finally:
        _watcher = previous


@contextlib.contextmanager
def transfer(direction: Direction, name: str, size: int) -> Iterator[Transfer]:
    """One file's transfer; it counts as done (``ok``) when the block ends without error."""
    current = Transfer(direction, name, size)
    outer, _active.transfer = _active.transfer, current
    if _watcher is not None:
        _watcher.started(current)
    try:
        yield current
        current.ok = True
    finally:
        current.ended = time.monotonic()
        _active.transfer = outer
        if _watcher is not None:
            _watcher.ended(current)


def moved(count: int) -> None:
    """``count`` more bytes of the active transfer went through."""
    current = _active.transfer
    if current is not None:
        current.done += count
        if _watcher is not None:
            _watcher.advanced(current)


def reached(offset: int) -> None:
    """The active transfer now stands at ``offset`` (a resumed upload may start further on, or
    again at 0)."""
    current = _active.transfer
    if current is not None:
        current.done = offset
        if _watcher is not None:
            _watcher.advanced(current)


__all__ = ["Direction", "Transfer", "Watcher", "moved", "reached", "transfer", "watching"]
