"""Transfers report to the watcher an entry point chose, and to nobody otherwise."""

from __future__ import annotations

import threading

import pytest

from bridge.core import progress
from bridge.core.progress import Transfer


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def started(self, transfer: Transfer) -> None:
        self.events.append(("started", transfer.name, transfer.done))

    def advanced(self, transfer: Transfer) -> None:
        self.events.append(("advanced", transfer.name, transfer.done))

    def ended(self, transfer: Transfer) -> None:
        self.events.append(("ended" if transfer.ok else "failed", transfer.name, transfer.done))


def test_moves_and_offsets_reach_the_watcher_in_order() -> None:
    recorder = Recorder()
    with progress.watching(recorder), progress.transfer("in", "a", 10) as current:
        progress.moved(4)
        progress.moved(4)
        progress.reached(2)  # a resumed upload that the broker made start again lower
        progress.moved(8)
    assert recorder.events == [
        ("started", "a", 0), ("advanced", "a", 4), ("advanced", "a", 8),
        ("advanced", "a", 2), ("advanced", "a", 10), ("ended", "a", 10),
    ]  # fmt: skip
    assert current.ok and current.ended is not None and current.seconds >= 0


def test_a_failed_transfer_is_reported_as_such_and_the_error_passes() -> None:
    recorder = Recorder()
    with pytest.raises(OSError), progress.watching(recorder), progress.transfer("out", "b", 5):
        progress.moved(3)
        raise OSError("cut")
    assert recorder.events[-1] == ("failed", "b", 3)


def test_without_a_watcher_or_a_transfer_counting_does_nothing() -> None:
    progress.moved(5)  # no transfer: the site entry and the agent share these loops
    with progress.transfer("in", "c", 5) as current:
        progress.moved(5)
    assert current.done == 5 and current.ok
    recorder = Recorder()
    with progress.watching(recorder):
        progress.moved(1)
    assert recorder.events == []


def test_a_transfer_of_another_thread_is_not_counted_into() -> None:
    recorder = Recorder()
    opened, release = threading.Event(), threading.Event()

    def other() -> None:
        with progress.transfer("out", "theirs", 10):
            opened.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    with progress.watching(recorder):
        thread.start()
        opened.wait(5)
        progress.moved(4)  # this thread opened nothing: nothing is counted
        release.set()
        thread.join()
    assert [event for event in recorder.events if event[0] == "advanced"] == []
