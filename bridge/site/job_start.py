"""Starting an accepted job at the site, exactly once, whichever entry it came through.

``site serve-ssh`` (a submit over SSH, ``bridge.site.session``) and the agent (a job pulled
from the broker, ``bridge.site.pulled_job``) start a job through ``start_once``, one sequence
under the work dir's lock:

    1. a native id is recorded: the job started earlier; it is followed, never started again;
    2. a ``submitting`` mark without one: a start was cut off between the scheduler's submit
       and that record (the site process killed); the scheduler is asked to ``recover`` it
       first, and a job it finds is followed;
    3. the job was cancelled before it started: it never starts;
    4. the accepted request is saved, the inputs are staged, the job is submitted and its
       native id recorded before the entry hears "started".

Only the entry's own steps differ (``StartSteps``): how inputs arrive (frames over SSH, or
downloads from the broker), what a cancel looks like, and what the entry is told.

Never: stage inputs over a job that may have started, or submit a job whose earlier start the
scheduler cannot rule out (``recover`` raises instead, and the request fails).
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

from bridge.core.errors import SiteError
from bridge.core.workdir_files import SCHEDULER_FILE, STDERR_FILE, STDOUT_FILE
from bridge.site.accepted_job import AcceptedJob, load_accepted, save_accepted
from bridge.site.config import SiteConfig
from bridge.site.workdir import WorkDir
from schedulers import JobSpec, Scheduler

log = logging.getLogger(__name__)

# What a job's environment keeps from the site entry's own: enough to run programs, nothing
# from the SSH session (SSH_*), no secrets the site entry may hold.
_KEPT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR")


class StartSteps(Protocol):
    """What an entry does at each step of ``start_once``; every step runs under the lock."""

    def found_started(self, native_id: str, recovered: bool) -> None:
        """The job had started before (``recovered``: its start was cut off before the native
        id was recorded, and the scheduler found it)."""

    def walltime_limit(self) -> float | None:
        """The request's walltime limit in seconds, if it sets one (checked before staging)."""

    def cancelled(self) -> bool:
        """Whether the job was cancelled before it started (it then never does); may raise."""

    def stage_inputs(self, job: AcceptedJob) -> bool:
        """Bring every declared input into the work dir; False: do not start after all."""

    def started(self, native_id: str) -> None:
        """The job was submitted and its native id recorded."""


def start_once(job: AcceptedJob, scheduler: Scheduler, steps: StartSteps) -> str | None:
    """Start the job unless it started before; returns its native id, or None when it was
    cancelled before it started. The work dir must exist."""
    wd = job.workdir
    with wd.locked():
        native_id = wd.native_id()
        if native_id is not None:
            steps.found_started(native_id, recovered=False)
            return native_id
        # A start cut off before its id was recorded is recovered, never staged over.
        native_id = recover(job, scheduler)
        if native_id is not None:
            steps.found_started(native_id, recovered=True)
            return native_id
        walltime_limit = steps.walltime_limit()
        if steps.cancelled():
            return None
        wd.discard_inputs()  # leftovers of an earlier, interrupted attempt
        save_accepted(job)
        if not steps.stage_inputs(job):
            return None
        native_id = start(job, scheduler, walltime_limit)
        steps.started(native_id)
    return native_id


def start(job: AcceptedJob, scheduler: Scheduler, walltime_limit: float | None = None) -> str:
    """Submit the job to its scheduler and record the native id; returns it.

    Call under the work dir's lock with no native id recorded, after ``recover`` (which
    callers ask before staging inputs) found no earlier start."""
    recovered = recover(job, scheduler)
    if recovered is not None:
        return recovered
    spec = build_spec(job, walltime_limit)
    _check_program(job)
    with open(job.workdir.control_file(SCHEDULER_FILE), "w", encoding="utf-8") as stream:
        stream.write(scheduler.name + "\n")
    job.workdir.mark_submitting()
    native_id = scheduler.submit(spec)
    job.workdir.record_native_id(native_id)
    log.info("%s: started command %s as %s", job.request.job_id, job.command.name, native_id)
    return native_id


def recover(job: AcceptedJob, scheduler: Scheduler) -> str | None:
    """The native id of an earlier start that reached the scheduler without being recorded,
    now recorded; None if no start was cut off (or it never reached the scheduler).

    Call under the work dir's lock with no native id recorded. Raises ``SchedulerError`` when
    the scheduler cannot tell: the caller fails the request rather than start the job twice."""
    wd, job_id = job.workdir, job.request.job_id
    if not wd.submitting():
        return None
    native_id = scheduler.recover(build_spec(job, None))
    if native_id is None:
        log.info("%s: an earlier start never reached %s", job_id, scheduler.name)
        wd.clear_submitting()
        return None
    wd.record_native_id(native_id)
    log.warning(
        "%s: an earlier start reached %s as %s before it was recorded; following that job",
        job_id, scheduler.name, native_id,
    )  # fmt: skip
    return native_id


def recorded_or_recovered(site: SiteConfig, wd: WorkDir) -> str | None:
    """The job's native id, recovered first if its start was cut off before recording it;
    None if it never started. Call under the work dir's lock."""
    native_id = wd.native_id()
    if native_id is None and wd.submitting():
        job = load_accepted(site, wd)
        native_id = recover(job, site.scheduler(job.command))
    return native_id


def _check_program(job: AcceptedJob) -> None:
    program = job.command.program
    if not (os.path.isfile(program) and os.access(program, os.X_OK)):
        log.error("%s: program %s is missing or not executable", job.request.job_id, program)
        # The path stays at the site: the bridge learns only that the command cannot run.
        raise SiteError(
            f"the program for command {job.command.name} is not installed or not executable "
            "at the site; ask the site admin to check its config (details in the site log)"
        )


def build_spec(job: AcceptedJob, walltime_limit: float | None) -> JobSpec:
    wd, request, command = job.workdir, job.request, job.command
    if command.log_file:  # the original convention: `prog > remote_program_exec.log 2>&1`
        stdout = stderr = os.path.join(wd.path, command.log_file)
    else:
        stdout, stderr = wd.control_file(STDOUT_FILE), wd.control_file(STDERR_FILE)
    walltimes = [w for w in (command.walltime, walltime_limit) if w]
    return JobSpec(
        job_id=request.job_id,
        workdir=wd.path,
        control_dir=wd.control,
        argv=command.argv(job.values, request.job_id, wd.path),
        env=job_environment(job),
        stdout_path=stdout,
        stderr_path=stderr,
        walltime=min(walltimes) if walltimes else None,
        resources=command.render_resources(job.values),
    )


def job_environment(job: AcceptedJob) -> dict[str, str]:
    env = {key: os.environ[key] for key in _KEPT_ENV if key in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        MINT_BRIDGE_JOB_ID=job.request.job_id,
        MINT_BRIDGE_WORKDIR=job.workdir.path,
        MINT_BRIDGE_COMMAND=job.command.name,
    )
    for name, value in job.values.items():
        env[f"MINT_PARAM_{name.upper()}"] = str(value)
    env.update(job.command.environment(job.values, job.request.job_id, job.workdir.path))
    return env
