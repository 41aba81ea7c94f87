"""A job the site accepted: its records in the work dir, its logs, following it, its results.

What both entries (``site serve-ssh`` and the agent) do with an accepted job besides starting
it (that is ``bridge.site.job_start``'s): save and reload the accepted request, record the
staged inputs (so inputs left unchanged are not sent back), tail the job's logs from byte
offsets while asking its scheduler how it stands, and collect its results by the command's
return rules. Nothing here starts, stages into or cancels a job.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bridge.core import defaults
from bridge.core.errors import SiteError
from bridge.core.job import JobOutcome, JobRequest, ParamValue
from bridge.core.results import ResultFile, Skipped, collect_results
from bridge.core.workdir_files import INPUTS_FILE, REQUEST_FILE, STDERR_FILE, STDOUT_FILE
from bridge.site.config import CommandSpec, SiteConfig
from bridge.site.status_cache import SharedStatus
from bridge.site.workdir import WorkDir
from schedulers import JobHandle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AcceptedJob:
    request: JobRequest
    command: CommandSpec
    values: dict[str, ParamValue]
    workdir: WorkDir


def load_accepted(site: SiteConfig, wd: WorkDir) -> AcceptedJob:
    """Rebuild the accepted job from its control files (for attach and cancel)."""
    try:
        record = wd.read_json(REQUEST_FILE)
    except FileNotFoundError as exc:
        raise SiteError(f"{wd.job_id}: request record missing from its work dir") from exc
    request = JobRequest.from_message(record["request"])
    return AcceptedJob(request, site.command(request.command), record["values"], wd)


def save_accepted(job: AcceptedJob) -> None:
    job.workdir.write_json(
        REQUEST_FILE, {"request": job.request.to_message(), "values": job.values}
    )


def record_staged_inputs(job: AcceptedJob, staged: dict[str, tuple[int, int]]) -> None:
    """Record each staged input's size and mtime (ns), once all of them are in place."""
    job.workdir.write_json(INPUTS_FILE, staged)
    log.info("%s: staged %d inputs", job.request.job_id, len(staged))


def collect_job_results(job: AcceptedJob) -> tuple[list[ResultFile], list[Skipped]]:
    """The results the command returns, leaving out inputs the job did not change."""
    wd = job.workdir
    try:
        unchanged = {k: tuple(v) for k, v in wd.read_json(INPUTS_FILE).items()}
    except FileNotFoundError:
        unchanged = {}
    return collect_results(wd.path, job.command.returns, unchanged)


def log_paths(wd: WorkDir, command: CommandSpec) -> dict[str, str]:
    """The files holding the job's stdout and stderr (one file when the command merges them)."""
    if command.log_file:
        return {"stdout": os.path.join(wd.path, command.log_file)}
    return {"stdout": wd.control_file(STDOUT_FILE), "stderr": wd.control_file(STDERR_FILE)}


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
