"""Starting a job at the site exactly once, even when the process that started it was killed
between the scheduler's submit and the record of its native id (``job_start.start``/``recover``,
and the site entry's submit, attach and cancel over them), with the local scheduler's real
processes and a scripted scheduler for the failure paths."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.core.errors import SchedulerError, TransportError
from bridge.core.job import JobOutcome, JobRequest, JobState
from bridge.core.protocol import KIND_JSON, PROTOCOL_VERSION, FrameReader, FrameWriter
from bridge.site import accepted_job, job_start
from bridge.site.config import SiteConfig, load_site_config
from bridge.site.session import Session
from bridge.site.workdir import WorkDir
from schedulers.base import JobHandle, JobSpec, Scheduler
from tests.support.frames import LoopbackChannel
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

# Records each run in a counter file outside the work dir, then works for a while.
COUNTER_PROGRAM = """#!{python}
import os, sys, time
with open({counter!r}, "a") as out:
    out.write(f"{{os.getpid()}}\\n")
print("working", flush=True)
time.sleep(float(sys.argv[1]))
"""


def write_site(tmp_path: Path) -> tuple[SiteConfig, Path]:
    counter = tmp_path / "counter.txt"
    program = tmp_path / "count.py"
    program.write_text(COUNTER_PROGRAM.format(python=sys.executable, counter=str(counter)))
    program.chmod(0o755)
    config = tmp_path / "site.toml"
    config.write_text(
        f"""
[site]
name = "unit"
work_base = "{tmp_path / "work"}"

[commands.count]
program = "{program}"
args = ["{{seconds}}"]
[commands.count.params.seconds]
type = "float"
default = 1.0
"""
    )
    return load_site_config(str(config)), counter


def accept(site: SiteConfig, seconds: float = 1.0) -> accepted_job.AcceptedJob:
    request = JobRequest.from_message(
        {"job_id": str(uuid.uuid4()), "command": "count", "params": {"seconds": seconds}}
    )
    command, values = site.check_request(request)
    wd = WorkDir(site.work_base, request.job_id)
    wd.create()
    job = accepted_job.AcceptedJob(request, command, values, wd)
    accepted_job.save_accepted(job)
    wd.write_json("inputs.json", {})
    return job


def start_cut_off(site: SiteConfig, job: accepted_job.AcceptedJob) -> str:
    """Start the job as a site process killed right after the submit leaves it: submitted,
    its native id never recorded."""
    native_id = job_start.start(job, site.scheduler(job.command))
    os.unlink(job.workdir.control_file("native_id"))
    return native_id


def runs(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def wait_final(site: SiteConfig, job: accepted_job.AcceptedJob, native_id: str) -> JobOutcome:
    scheduler = site.scheduler(job.command)
    handle = JobHandle(job.request.job_id, native_id, job.workdir.control)
    result: list[JobOutcome] = []

    def ended() -> bool:
        result[:] = [scheduler.status([handle])[native_id]]
        return result[0].state.is_final

    wait_until(ended, "the job to end")
    return result[0]


class Duplex:
    """A ByteChannel for a Session: it reads what the test wrote, writes somewhere else."""

    def __init__(self, *messages: dict[str, object]) -> None:
        self.incoming = LoopbackChannel()
        writer = FrameWriter(self.incoming)
        for message in messages:
            writer.write_json(message)
        self.outgoing = LoopbackChannel()

    def recv(self, size: int) -> bytes:
        return self.incoming.recv(size)

    def send_all(self, data: bytes | memoryview) -> None:
        self.outgoing.send_all(data)

    def replies(self) -> list[dict[str, object]]:
        reader, found = FrameReader(self.outgoing), []
        while True:
            try:
                kind, payload = reader.read_frame()
            except TransportError:  # all read
                return found
            if kind == KIND_JSON:
                found.append(json.loads(payload))


# --- job_start.start and job_start.recover with the local scheduler -----------------------


def test_a_start_cut_off_before_its_id_was_recorded_is_recovered_not_repeated(
    tmp_path: Path,
) -> None:
    site, counter = write_site(tmp_path)
    job = accept(site)
    native_id = start_cut_off(site, job)
    wait_until(lambda: len(runs(counter)) == 1, "the job to start")

    assert job_start.recover(job, site.scheduler(job.command)) == native_id
    assert job.workdir.native_id() == native_id
    assert wait_final(site, job, native_id).state is JobState.COMPLETED
    assert len(runs(counter)) == 1, "the job must run exactly once"


def test_start_itself_recovers_before_it_submits(tmp_path: Path) -> None:
    site, counter = write_site(tmp_path)
    job = accept(site, seconds=0.1)
    native_id = start_cut_off(site, job)
    assert job_start.start(job, site.scheduler(job.command)) == native_id
    assert wait_final(site, job, native_id).state is JobState.COMPLETED
    time.sleep(0.3)  # a second run, were there one, would have recorded itself by now
    assert len(runs(counter)) == 1


# --- the scheduler's answer decides ---------------------------------------------------------


class ScriptedScheduler(Scheduler):
    name = "scripted"

    def __init__(self, recovered: str | SchedulerError | None) -> None:
        self.recovered = recovered
        self.submits: list[str] = []

    def submit(self, spec: JobSpec) -> str:
        self.submits.append(spec.job_id)
        return "new-1"

    def recover(self, spec: JobSpec) -> str | None:
        if isinstance(self.recovered, SchedulerError):
            raise self.recovered
        return self.recovered

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobOutcome]:
        return {h.native_id: JobOutcome(JobState.RUNNING) for h in handles}

    def cancel(self, handle: JobHandle) -> None:
        pass


def test_a_scheduler_that_cannot_tell_fails_the_start(tmp_path: Path) -> None:
    site, _ = write_site(tmp_path)
    job = accept(site)
    job.workdir.mark_submitting()
    scheduler = ScriptedScheduler(SchedulerError("squeue timed out", transient=True))
    with pytest.raises(SchedulerError, match="timed out"):
        job_start.start(job, scheduler)
    assert scheduler.submits == [] and job.workdir.native_id() is None
    assert job.workdir.submitting(), "the next attempt must ask again"


def test_a_start_that_never_reached_the_scheduler_is_submitted(tmp_path: Path) -> None:
    site, _ = write_site(tmp_path)
    job = accept(site)
    job.workdir.mark_submitting()
    scheduler = ScriptedScheduler(None)
    assert job_start.start(job, scheduler) == "new-1"
    assert scheduler.submits == [job.request.job_id]
    assert job.workdir.native_id() == "new-1"


def test_no_mark_no_question(tmp_path: Path) -> None:
    site, _ = write_site(tmp_path)
    job = accept(site)
    scheduler = ScriptedScheduler(SchedulerError("must not be asked"))
    assert job_start.recover(job, scheduler) is None
    assert job_start.start(job, scheduler) == "new-1"
    assert job.workdir.submitting()  # written before the submit


def test_the_submitting_mark_is_written_before_the_submit(tmp_path: Path) -> None:
    site, _ = write_site(tmp_path)
    job = accept(site)
    seen: list[bool] = []

    class Watching(ScriptedScheduler):
        def submit(self, spec: JobSpec) -> str:
            seen.append(job.workdir.submitting())
            return super().submit(spec)

    job_start.start(job, Watching(None))
    assert seen == [True]


# --- the site entry: a retried submit attaches, a cancel stops the recovered job ------------


def request_message(job: accepted_job.AcceptedJob, op: str) -> dict[str, object]:
    if op == "submit":
        return {"op": op, "protocol": PROTOCOL_VERSION, "request": job.request.to_message()}
    return {"op": op, "protocol": PROTOCOL_VERSION, "job_id": job.request.job_id}


def test_a_retried_submit_attaches_to_the_recovered_job(tmp_path: Path) -> None:
    site, counter = write_site(tmp_path)
    job = accept(site)
    native_id = start_cut_off(site, job)
    channel = Duplex(request_message(job, "submit"), {"op": "ack"})
    assert Session(site, channel).serve() == 0
    replies = channel.replies()
    assert replies[0] == {"attached": True}  # no "ready": inputs are never staged again
    exits = [r["exit"] for r in replies if "exit" in r]
    assert exits and exits[0]["state"] == "completed"  # type: ignore[index]
    assert job.workdir.native_id() == native_id
    assert len(runs(counter)) == 1, "the job must run exactly once"


def test_a_cancel_reaches_a_job_whose_start_was_cut_off(tmp_path: Path) -> None:
    site, counter = write_site(tmp_path)
    job = accept(site, seconds=60)
    native_id = start_cut_off(site, job)
    wait_until(lambda: len(runs(counter)) == 1, "the job to start")
    channel = Duplex(request_message(job, "cancel"))
    assert Session(site, channel).serve() == 0
    (reply,) = channel.replies()
    assert reply["cancel"]["state"] == "cancelled"  # type: ignore[index]
    assert job.workdir.native_id() == native_id
    assert not job.workdir.cancel_requested()  # it had started: stopped, not pre-empted


# --- cleanup meets a cut-off start --------------------------------------------------------------


def test_cleanup_keeps_a_cut_off_start_that_is_running(tmp_path: Path) -> None:
    from bridge.site.cleanup import remove_expired

    site, counter = write_site(tmp_path)
    job = accept(site, seconds=3.0)
    native_id = start_cut_off(site, job)
    wait_until(lambda: len(runs(counter)) == 1, "the solver to start")
    # Long after the retention time: only the recovery tells cleanup the job is running.
    assert remove_expired(site, now=time.time() + 10 * site.retention) == []
    assert job.workdir.native_id() == native_id
    assert os.path.isdir(job.workdir.path)
    assert len(runs(counter)) == 1


def test_cleanup_removes_a_start_that_never_reached_the_scheduler(tmp_path: Path) -> None:
    from bridge.site.cleanup import remove_expired

    site, counter = write_site(tmp_path)
    job = accept(site)
    job.workdir.mark_submitting()  # killed after the marker, before the submit
    past = time.time() - 10 * site.retention
    os.utime(job.workdir.control, (past, past))
    # Found never started: the marker goes, and the dir one retention period later.
    assert remove_expired(site) == []
    assert not job.workdir.submitting()
    assert remove_expired(site, now=time.time() + site.retention + 60) == [job.workdir.path]
    assert runs(counter) == []
