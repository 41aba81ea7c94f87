"""One scheduler status call per interval for all of a site's jobs, whatever their number.

Over SSH, each connection's site entry follows one job. Left alone, a hundred running jobs
would each run ``squeue`` every interval. Instead they share the answers through a small JSON
file in the work base: whoever finds it stale takes an flock, asks the scheduler about every
job still running at the site in one call, and rewrites the file; the others read it.

The ``local`` scheduler answers from files in microseconds, so it is asked directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator

from bridge.core.atomic_write import write_json_atomic
from bridge.core.errors import ProtocolError
from bridge.core.job import JobOutcome, check_job_id
from bridge.core.workdir_files import OUTCOME_FILE, SCHEDULER_FILE
from bridge.site.workdir import WorkDir
from schedulers import JobHandle, Scheduler

log = logging.getLogger(__name__)


class SharedStatus:
    def __init__(self, work_base: str, scheduler: Scheduler) -> None:
        self.work_base = work_base
        self.scheduler = scheduler
        self.path = os.path.join(work_base, f".mint-bridge-status-{scheduler.name}.json")

    def get(self, handle: JobHandle) -> JobOutcome:
        if self.scheduler.poll_interval < 1.0:
            return self.record(handle, self.scheduler.status([handle])[handle.native_id])
        cached = self._fresh(handle)
        if cached is None:
            with self._locked():
                cached = self._fresh(handle) or self._refresh(handle)
        return self.record(handle, cached)

    def _fresh(self, handle: JobHandle) -> JobOutcome | None:
        try:
            with open(self.path, encoding="utf-8") as stream:
                data = json.load(stream)
        except (FileNotFoundError, ValueError):
            return None
        # Wall-clock time, because site entries on other login nodes share the file. An answer
        # from the future is one from before a step of the clock back: stale, or it would be
        # taken as fresh for as long as the step.
        age = time.time() - float(data.get("at", 0))
        if not 0 <= age < self.scheduler.poll_interval:
            return None
        entry = data.get("outcomes", {}).get(handle.native_id)
        return JobOutcome.from_message(entry) if isinstance(entry, dict) else None

    def _refresh(self, handle: JobHandle) -> JobOutcome:
        handles = {h.native_id: h for h in self._running_handles()}
        handles[handle.native_id] = handle
        outcomes = self.scheduler.status(list(handles.values()))
        # Every job seen ending is settled here, not only the one asked about: a job nobody
        # follows any more (its bridge cancelled and left) is then not asked about again.
        for native_id, other in handles.items():
            self.record(other, outcomes[native_id])
        write_json_atomic(
            self.path,
            {"at": time.time(), "outcomes": {k: v.to_message() for k, v in outcomes.items()}},
        )
        log.debug("status of %d %s job(s) in one call", len(handles), self.scheduler.name)
        return outcomes[handle.native_id]

    def _running_handles(self) -> Iterator[JobHandle]:
        """Jobs of this scheduler at the site whose final outcome is not yet recorded."""
        try:
            entries = list(os.scandir(self.work_base))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                wd = WorkDir(self.work_base, check_job_id(entry.name))
            except ProtocolError:
                continue
            if (
                os.path.exists(wd.control_file(OUTCOME_FILE))
                or scheduler_of(wd) != self.scheduler.name
            ):
                continue
            native_id = wd.native_id()
            if native_id:
                yield JobHandle(wd.job_id, native_id, wd.control)

    def record(self, handle: JobHandle, outcome: JobOutcome) -> JobOutcome:
        """Keep a final outcome in the job's control dir (the first one seen stays)."""
        if outcome.state.is_final:
            path = os.path.join(handle.control_dir, OUTCOME_FILE)
            if not os.path.exists(path):
                write_json_atomic(path, outcome.to_message())
        return outcome

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def scheduler_of(wd: WorkDir) -> str | None:
    try:
        with open(wd.control_file(SCHEDULER_FILE), encoding="utf-8") as stream:
            return stream.read().strip()
    except FileNotFoundError:
        return None
