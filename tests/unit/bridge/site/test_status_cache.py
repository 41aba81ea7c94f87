"""Many jobs of one site, one scheduler status call per interval."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bridge.core.job import JobOutcome, JobState, new_job_id
from bridge.core.workdir_files import OUTCOME_FILE, SCHEDULER_FILE
from bridge.site.status_cache import SharedStatus
from schedulers.base import JobHandle, JobSpec, Scheduler


class CountingScheduler(Scheduler):
    name = "counting"
    poll_interval = 60.0

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.states: dict[str, JobState] = {}

    def submit(self, spec: JobSpec) -> str:
        raise NotImplementedError

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobOutcome]:
        self.calls.append(sorted(h.native_id for h in handles))
        return {
            h.native_id: JobOutcome(self.states.get(h.native_id, JobState.RUNNING)) for h in handles
        }

    def cancel(self, handle: JobHandle) -> None:
        raise NotImplementedError


def make_job(base: Path, native_id: str, scheduler: str = "counting") -> JobHandle:
    job_id = new_job_id()
    control = base / job_id / ".mint-bridge"
    control.mkdir(parents=True)
    (control / "native_id").write_text(native_id + "\n")
    (control / SCHEDULER_FILE).write_text(scheduler + "\n")
    return JobHandle(job_id, native_id, str(control))


def test_one_call_serves_every_job_of_the_site(tmp_path: Path) -> None:
    handles = [make_job(tmp_path, str(100 + i)) for i in range(20)]
    make_job(tmp_path, "999", scheduler="other")  # another scheduler's job is not asked about
    scheduler = CountingScheduler()
    # Each site entry process has its own SharedStatus; they share the file.
    outcomes = [SharedStatus(str(tmp_path), scheduler).get(h) for h in handles]
    assert [o.state for o in outcomes] == [JobState.RUNNING] * 20
    assert scheduler.calls == [sorted(str(100 + i) for i in range(20))]


def test_a_stale_answer_is_refreshed_and_final_outcomes_recorded(tmp_path: Path) -> None:
    handle = make_job(tmp_path, "7")
    other = make_job(tmp_path, "8")
    scheduler = CountingScheduler()
    status = SharedStatus(str(tmp_path), scheduler)
    assert status.get(handle).state is JobState.RUNNING
    scheduler.poll_interval = 0.0 + 1.0
    cache = json.loads(Path(status.path).read_text())
    cache["at"] -= 5.0  # pretend the answer is older than the interval
    Path(status.path).write_text(json.dumps(cache))
    scheduler.states["7"] = JobState.COMPLETED
    assert status.get(handle).state is JobState.COMPLETED
    assert len(scheduler.calls) == 2
    recorded = json.loads((Path(handle.control_dir) / OUTCOME_FILE).read_text())
    assert recorded["state"] == "completed"
    # A job whose outcome is recorded is not asked about again.
    cache = json.loads(Path(status.path).read_text())
    cache["at"] -= 5.0
    Path(status.path).write_text(json.dumps(cache))
    status.get(other)
    assert scheduler.calls[-1] == ["8"]


def test_a_job_nobody_follows_is_settled_by_the_pass_made_for_another(tmp_path: Path) -> None:
    abandoned = make_job(tmp_path, "7")  # cancelled by a bridge that has gone away since
    followed = make_job(tmp_path, "8")
    scheduler = CountingScheduler()
    scheduler.states["7"] = JobState.CANCELLED
    status = SharedStatus(str(tmp_path), scheduler)
    assert status.get(followed).state is JobState.RUNNING
    recorded = json.loads((Path(abandoned.control_dir) / OUTCOME_FILE).read_text())
    assert recorded["state"] == "cancelled"
    assert not (Path(followed.control_dir) / OUTCOME_FILE).exists()  # still running
    cache = json.loads(Path(status.path).read_text())
    cache["at"] -= 120.0
    Path(status.path).write_text(json.dumps(cache))
    status.get(followed)
    assert scheduler.calls == [["7", "8"], ["8"]]  # never asked about again


def test_an_answer_from_before_a_step_of_the_clock_back_is_stale(tmp_path: Path) -> None:
    handle = make_job(tmp_path, "7")
    scheduler = CountingScheduler()
    status = SharedStatus(str(tmp_path), scheduler)
    assert status.get(handle).state is JobState.RUNNING
    cache = json.loads(Path(status.path).read_text())
    cache["at"] += 3600.0  # written an hour "later": the clock has since been set back an hour
    Path(status.path).write_text(json.dumps(cache))
    scheduler.states["7"] = JobState.COMPLETED
    assert status.get(handle).state is JobState.COMPLETED  # asked again, not cached for an hour
    assert len(scheduler.calls) == 2
