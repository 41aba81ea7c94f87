"""Waiting in tests: poll a condition until it holds, and read what a site job recorded.

One poller for every test, so a timeout always fails with the same message naming what was
awaited; a test never sleeps a fixed time for something it can check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

# Short enough that a test sees a change almost at once, long enough not to spin a core.
POLL_INTERVAL = 0.05


def wait_until(condition: Callable[[], object], what: str, limit: float = 60.0) -> None:
    """Return once `condition()` is truthy; fail naming `what` after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(POLL_INTERVAL)


def native_id(work_base: Path, job_id: str) -> str:
    """The scheduler's id the site recorded for a job, or '' before it has one."""
    path = work_base / job_id / ".mint-bridge" / "native_id"
    return path.read_text().strip() if path.exists() else ""


def wait_for(condition: Callable[[], object], timeout: float = 30.0,
             what: str = "condition") -> None:  # fmt: skip
    """`wait_until` with the argument order of the SSH tests' calls."""
    wait_until(condition, what, limit=timeout)
