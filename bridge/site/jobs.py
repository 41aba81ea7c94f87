"""Accepting, staging and starting a job at the site, and following it to its end.

A job is started at most once: staging and start happen under the work dir's lock, and the
scheduler's native id is recorded before the bridge hears "started". A retried submit of a job
that already started attaches to it instead. A start cut off between the submit and that record
(the site process killed) left a ``submitting`` mark: the next request for the job asks the
scheduler to ``recover`` it before anything else, and follows what it finds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bridge.core import defaults
from bridge.core.errors import ProtocolError, SiteError
from bridge.core.job import JobOutcome, JobRequest, ParamValue
from bridge.core.protocol import FrameReader
from bridge.core.staging import FileHeader, receive_file
from bridge.site.config import CommandSpec, SiteConfig
from bridge.site.status_cache import SCHEDULER_FILE, SharedStatus
from bridge.site.workdir import WorkDir
from schedulers import JobHandle, JobSpec, Scheduler

log = logging.getLogger(__name__)

# What a job's environment keeps from the site entry's own: enough to run programs, nothing
# from the SSH session (SSH_*), no secrets the site entry may hold.
_KEPT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR")


@dataclass(frozen=True)
class AcceptedJob:
    request: JobRequest
    command: CommandSpec
    values: dict[str, ParamValue]
    workdir: WorkDir


def stage_inputs(job: AcceptedJob, reader: FrameReader) -> None:
    """Receive every declared input into the work dir; each is verified before it appears."""
    dir_fd = os.open(job.workdir.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        staged: dict[str, tuple[int, int]] = {}
        for decl in job.request.inputs:
            header = FileHeader.from_message(reader.read_json())
            if header.name != decl.name or header.size != decl.size:
                raise ProtocolError(
                    f"expected input {decl.name} ({decl.size} bytes), got {header.name!r:.80}"
                )
            receive_file(reader, header, dir_fd, decl.name)
            st = os.stat(decl.name, dir_fd=dir_fd, follow_symlinks=False)
            staged[decl.name] = (st.st_size, st.st_mtime_ns)
    finally:
        os.close(dir_fd)
    job.workdir.write_json("inputs.json", staged)
    log.info("%s: staged %d inputs", job.request.job_id, len(staged))


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
        stdout, stderr = wd.control_file("stdout"), wd.control_file("stderr")
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


def log_paths(wd: WorkDir, command: CommandSpec) -> dict[str, str]:
    """The files holding the job's stdout and stderr (one file when the command merges them)."""
    if command.log_file:
        return {"stdout": os.path.join(wd.path, command.log_file)}
    return {"stdout": wd.control_file("stdout"), "stderr": wd.control_file("stderr")}


@dataclass
class LogTail:
    """Reads new bytes of a growing log file from a byte offset."""

    path: str
    offset: int = 0

    def read_new(self, limit: int = defaults.CHUNK_SIZE) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(limit)
        except FileNotFoundError:
            return b""
        self.offset += len(data)
        return data


def follow(
    status: SharedStatus, handle: JobHandle, tails: dict[str, LogTail]
) -> Iterator[tuple[str, bytes] | JobOutcome | None]:
    """Yield ``(stream, bytes)`` as the logs grow, ``None`` when idle, and the outcome last."""
    delay = defaults.LOG_POLL_MIN
    next_status = 0.0
    while True:
        got_data = False
        for stream, tail in tails.items():
            data = tail.read_new()
            if data:
                got_data = True
                yield stream, data
        if time.monotonic() >= next_status:
            outcome = status.get(handle)
            next_status = time.monotonic() + status.scheduler.poll_interval
            if outcome.state.is_final:
                yield from _drain(tails)
                yield outcome
                return
        if got_data:
            delay = defaults.LOG_POLL_MIN
            continue
        yield None
        time.sleep(delay)
        delay = min(delay * 2, defaults.LOG_POLL_MAX)


def _drain(tails: dict[str, LogTail]) -> Iterator[tuple[str, bytes]]:
    for stream, tail in tails.items():
        while data := tail.read_new():
            yield stream, data


def load_accepted(site: SiteConfig, wd: WorkDir) -> AcceptedJob:
    """Rebuild the accepted job from its control files (for attach and cancel)."""
    try:
        record = wd.read_json("request.json")
    except FileNotFoundError as exc:
        raise SiteError(f"{wd.job_id}: request record missing from its work dir") from exc
    request = JobRequest.from_message(record["request"])
    return AcceptedJob(request, site.command(request.command), record["values"], wd)


def save_accepted(job: AcceptedJob) -> None:
    job.workdir.write_json(
        "request.json", {"request": job.request.to_message(), "values": job.values}
    )
