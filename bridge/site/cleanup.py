"""Removing work dirs whose retention time has passed (``mint-bridge site cleanup``).

Only directories whose name is a job id and that hold our control dir are considered, so
nothing else in a shared work base such as /tmp is ever touched. A job still running is kept.

A job that started but left no record of its end (its runner was killed, the machine
rebooted, the scheduler forgot it) is looked up with its scheduler, one status call per
scheduler for all such jobs: once the scheduler says it ended or is lost, that outcome is
recorded, and the work dir is kept for one more retention period from then, so whoever
looks for it in the meantime still finds it. A scheduler that cannot answer keeps them all.
"""

from __future__ import annotations

import logging
import os
import time

from bridge.core.atomic_write import write_json_atomic
from bridge.core.errors import BridgeError, ProtocolError
from bridge.core.job import check_job_id
from bridge.core.workdir_files import OUTCOME_FILE
from bridge.site.config import SiteConfig
from bridge.site.status_cache import scheduler_of
from bridge.site.workdir import WorkDir
from schedulers import NAMES, JobHandle, Scheduler, get_scheduler

log = logging.getLogger(__name__)


def remove_expired(site: SiteConfig, dry_run: bool = False, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(site.work_base))
    except FileNotFoundError:
        return removed
    workdirs = [wd for entry in entries if (wd := _our_workdir(site, entry)) is not None]
    ends = _EndRecords(site)
    if not dry_run:
        for wd in workdirs:
            if wd.submitting() and wd.native_id() is None:
                recover_cut_off_start(site, wd)
        record_lost_outcomes(site, [wd for wd in workdirs if _unfinished(wd, ends)])
    for wd in workdirs:
        if not _expired(wd, ends, site.retention, now):
            continue
        removed.append(wd.path)
        if not dry_run:
            wd.remove()
            log.info("%s: work dir removed after retention", wd.job_id)
    return removed


def _our_workdir(site: SiteConfig, entry: os.DirEntry[str]) -> WorkDir | None:
    try:
        check_job_id(entry.name)
    except ProtocolError:
        return None
    if not entry.is_dir(follow_symlinks=False):
        return None
    wd = WorkDir(site.work_base, entry.name)
    return wd if wd.exists() else None


def record_lost_outcomes(site: SiteConfig, unfinished: list[WorkDir]) -> None:
    """Ask each scheduler once about jobs without an end record; record the final outcomes."""
    by_scheduler: dict[str, list[JobHandle]] = {}
    for wd in unfinished:
        name, native_id = scheduler_of(wd), wd.native_id()
        if name and native_id:
            by_scheduler.setdefault(name, []).append(JobHandle(wd.job_id, native_id, wd.control))
    for name, handles in by_scheduler.items():
        try:
            outcomes = get_scheduler(name, site.scheduler_options).status(handles)
        except (BridgeError, ValueError) as exc:  # ValueError: a scheduler name we do not know
            log.warning("cleanup: cannot ask %s about %d job(s), keeping them: %s",
                        name, len(handles), exc)  # fmt: skip
            continue
        for handle in handles:
            outcome = outcomes.get(handle.native_id)
            if outcome is not None and outcome.state.is_final:
                write_json_atomic(
                    os.path.join(handle.control_dir, OUTCOME_FILE), outcome.to_message()
                )
                log.info("%s: ended as %s without a record; kept for the retention time",
                         handle.job_id, outcome.state.value)  # fmt: skip


def recover_cut_off_start(site: SiteConfig, wd: WorkDir) -> None:
    """A start cut off before its native id was recorded may be running: find it first, so
    its work dir is judged like any started job. If the scheduler cannot tell, it is kept."""
    from bridge.site import job_start  # the start machinery, only when such a dir exists

    try:
        with wd.locked():
            job_start.recorded_or_recovered(site, wd)
    except (BridgeError, OSError, ValueError) as exc:
        log.warning("%s: cannot tell whether its start reached the scheduler, keeping it: %s",
                    wd.job_id, exc)  # fmt: skip


class _EndRecords:
    """Finds the record that says a job ended: its adapter's (``Scheduler.end_record``), or
    the outcome the site saw from the scheduler (a walltime kill leaves no exit code)."""

    def __init__(self, site: SiteConfig) -> None:
        self.site = site
        self._adapters: dict[str, Scheduler] = {}

    def find(self, wd: WorkDir) -> str | None:
        for adapter in self._adapters_of(wd):
            record = adapter.end_record(wd.control)
            if record is not None:
                return record
        outcome = wd.control_file(OUTCOME_FILE)
        return outcome if os.path.exists(outcome) else None

    def _adapters_of(self, wd: WorkDir) -> list[Scheduler]:
        # The adapter is recorded before the submit; a dir that names none this version knows
        # may hold any adapter's record, so each is asked.
        name = scheduler_of(wd)
        names = [name] if name in NAMES else list(NAMES)
        return [self._adapter(n) for n in names]

    def _adapter(self, name: str) -> Scheduler:
        if name not in self._adapters:
            self._adapters[name] = get_scheduler(name, self.site.scheduler_options)
        return self._adapters[name]


def _unfinished(wd: WorkDir, ends: _EndRecords) -> bool:
    return ends.find(wd) is None and wd.native_id() is not None


def _expired(wd: WorkDir, ends: _EndRecords, retention: float, now: float) -> bool:
    """Expired when the job ended (or never started) longer than ``retention`` ago."""
    marker = ends.find(wd)
    if marker is None and (wd.native_id() is not None or wd.submitting()):
        return False  # started and not known to have ended: maybe still running
    reference = marker or wd.control
    try:
        return now - os.stat(reference).st_mtime > retention
    except FileNotFoundError:
        return False
