"""The broker's clock: the wall-clock time read once at start, advanced by the monotonic clock.

The store records instants (a lease's end, when a job was queued) as wall-clock seconds, so that
operators can read them and a restarted broker can go on from them. Read from ``time.time()``
each time, every instant would move with a step of the system clock: a step forward by an hour
would expire every live lease at once, a step back would keep a dead agent's lease for an hour
more. Measured by ``time.monotonic()`` from one reading at start, the broker's durations stay
true while the system clock jumps; a restart adopts the new time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# How far the system clock may drift from the broker's before it is reported as a step
# (NTP slews by well under a second per hour; a step is seconds to hours).
STEP_REPORT_SECONDS = 2.0


class SteadyClock:
    """Callable like ``time.time``: seconds since the epoch that never jump."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._wall, self._monotonic = wall, monotonic
        self._origin = wall() - monotonic()
        self._reported = 0.0

    def __call__(self) -> float:
        return self._origin + self._monotonic()

    def step(self) -> float:
        """How far the system clock has moved from this clock (seconds, + ahead)."""
        return self._wall() - self()

    def report_step(self) -> float | None:
        """Log a step of the system clock once (each new step again); the step, or None."""
        step = self.step()
        if abs(step - self._reported) < STEP_REPORT_SECONDS:
            return None
        self._reported = step
        if abs(step) < STEP_REPORT_SECONDS:
            log.warning("the system clock is back in step with the broker's clock")
            return step
        log.warning(
            "the system clock moved %+.0f s from the broker's clock; leases, timeouts and "
            "recorded times keep the broker's clock until it restarts", step,
        )  # fmt: skip
        return step
