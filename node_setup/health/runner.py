"""Running checks of many targets at once, finished within the timeout whatever hangs.

Each target's checks run in a daemon thread. When the deadline passes, the runner reports
what each unfinished target managed so far plus a ``fail`` for the step it was stuck in, and
returns: a site that accepts a connection and never answers cannot hold up the others, nor
the exit of the process (daemon threads do not keep it alive).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from node_setup.health.result import Check, Probe, Status

log = logging.getLogger(__name__)

Job = Callable[[Probe], object]  # what a job returns is not used


def run_all(jobs: Mapping[str, Job], timeout: float) -> list[Check]:
    """The checks of every target, in the order of ``jobs``, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    probes = {target: Probe(target) for target in jobs}
    threads = {
        target: threading.Thread(
            target=_run_one,
            args=(jobs[target], probes[target]),
            name=f"health-{target}",
            daemon=True,
        )
        for target in jobs
    }
    for thread in threads.values():
        thread.start()
    for thread in threads.values():
        thread.join(max(0.0, deadline - time.monotonic()))
    checks: list[Check] = []
    for target, probe in probes.items():
        checks.extend(probe.snapshot())
        if threads[target].is_alive():
            checks.append(_timed_out(probe, timeout))
    return checks


def _run_one(job: Job, probe: Probe) -> None:
    try:
        job(probe)
    except Exception as exc:  # a bug in a check must not hide the other targets' results
        log.exception("health check of %s failed", probe.target)
        probe.add(
            probe.step,
            Status.UNKNOWN,
            None,
            "",
            f"the check itself failed: {exc!r:.300}",
            "report this as a mint-bridge bug, with the output of --json",
        )


def _timed_out(probe: Probe, timeout: float) -> Check:
    fix = probe.step_fix or (
        f"{probe.target} hangs at this step: check the network to it and that its service "
        "answers; a larger --timeout only helps on a slow link"
    )
    return Check(
        probe.target,
        probe.step,
        Status.FAIL,
        timeout,
        "s",
        f"no answer within {timeout:g} s",
        fix,
    )


class Deadline:
    """Seconds left for one target's checks, to bound each blocking call."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, floor: float = 0.1) -> float:
        return max(floor, self.end - time.monotonic())
