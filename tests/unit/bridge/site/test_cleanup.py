"""Work dir retention: only our expired job dirs go, nothing else in the work base."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from bridge.core.workdir_files import CONTROL_DIR, LOCAL_EXIT_FILE
from bridge.site.cleanup import remove_expired
from bridge.site.config import SiteConfig

NOW = 2_000_000_000.0
RETENTION = 3600.0


def site(base: Path) -> SiteConfig:
    return SiteConfig(path="site.toml", name="t", work_base=str(base), retention=RETENTION)


def job_dir(base: Path, *, ended_ago: float | None = None, started: bool = True,
            control_age: float = 10 * RETENTION, job_id: str | None = None) -> Path:  # fmt: skip
    path = base / (job_id or str(uuid.uuid4()))
    control = path / CONTROL_DIR
    control.mkdir(parents=True)
    (path / "result.csv").write_text("data")
    if started:
        (control / "native_id").write_text("123:456.0\n")
    if ended_ago is not None:
        exit_file = control / LOCAL_EXIT_FILE
        exit_file.write_text('{"state": "completed", "exit_code": 0}')
        os.utime(exit_file, (NOW - ended_ago, NOW - ended_ago))
    os.utime(control, (NOW - control_age, NOW - control_age))
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


def test_removes_only_expired_job_dirs(base: Path, tmp_path: Path) -> None:
    expired = job_dir(base, ended_ago=RETENTION + 60)
    recent = job_dir(base, ended_ago=RETENTION - 60)
    running = job_dir(base)  # started, no exit record, old control dir
    never_started = job_dir(base, started=False)  # an abandoned submit, long ago
    fresh_unstarted = job_dir(base, started=False, control_age=60)

    # Things that are not ours, however old.
    not_a_uuid = base / "not-a-job"
    (not_a_uuid / CONTROL_DIR).mkdir(parents=True)
    exit_file = not_a_uuid / CONTROL_DIR / LOCAL_EXIT_FILE
    exit_file.write_text("{}")
    os.utime(exit_file, (0, 0))
    upper = job_dir(base, ended_ago=10 * RETENTION, job_id=str(uuid.uuid4()).upper())
    uuid1 = job_dir(base, ended_ago=10 * RETENTION, job_id=str(uuid.uuid1()))
    no_control = base / str(uuid.uuid4())
    no_control.mkdir()
    os.utime(no_control, (0, 0))
    a_file = base / str(uuid.uuid4())
    a_file.write_text("not a directory")
    os.utime(a_file, (0, 0))
    elsewhere = job_dir(tmp_path, ended_ago=10 * RETENTION)
    link = base / str(uuid.uuid4())
    os.symlink(elsewhere, link)

    removed = remove_expired(site(base), now=NOW)

    assert sorted(removed) == sorted([str(expired), str(never_started)])
    assert not expired.exists()
    assert not never_started.exists()
    for kept in (recent, running, fresh_unstarted, not_a_uuid, upper, uuid1, no_control):
        assert kept.is_dir(), kept
    assert a_file.read_text() == "not a directory"
    assert link.is_symlink()
    assert (elsewhere / "result.csv").read_text() == "data"


def test_dry_run_removes_nothing(base: Path) -> None:
    expired = job_dir(base, ended_ago=RETENTION + 1)
    before = sorted(p.name for p in expired.rglob("*"))
    assert remove_expired(site(base), dry_run=True, now=NOW) == [str(expired)]
    assert sorted(p.name for p in expired.rglob("*")) == before
    assert remove_expired(site(base), now=NOW) == [str(expired)]
    assert not expired.exists()
    assert remove_expired(site(base), now=NOW) == []


def test_retention_is_measured_from_the_exit_record(base: Path) -> None:
    # The job dir itself is ancient, but the job ended just now: kept.
    job = job_dir(base, ended_ago=1, control_age=100 * RETENTION)
    os.utime(job, (0, 0))
    assert remove_expired(site(base), now=NOW) == []
    assert remove_expired(site(base), now=NOW + RETENTION + 2) == [str(job)]


def test_exactly_at_retention_is_kept(base: Path) -> None:
    job = job_dir(base, ended_ago=RETENTION)
    assert remove_expired(site(base), now=NOW) == []
    assert job.exists()


def test_missing_work_base_is_not_an_error(tmp_path: Path) -> None:
    assert remove_expired(site(tmp_path / "missing"), now=NOW) == []


def test_uses_the_current_time_by_default(base: Path) -> None:
    job = job_dir(base, ended_ago=0)
    os.utime(job / CONTROL_DIR / LOCAL_EXIT_FILE, (1, 1))  # ended in 1970
    assert remove_expired(site(base)) == [str(job)]
    assert not job.exists()


def started_job(base: Path, scheduler: str, native_id: str) -> Path:
    path = base / str(uuid.uuid4())
    control = path / CONTROL_DIR
    control.mkdir(parents=True)
    (control / "native_id").write_text(native_id + "\n")
    (control / "scheduler").write_text(scheduler + "\n")
    (path / "result.csv").write_text("data")
    return path


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_lost_job_is_recorded_then_removed_after_the_retention(base: Path) -> None:
    # Its runner died without an exit record (a reboot, a kill -9): the local scheduler
    # reports it lost; cleanup records that and keeps the dir for one more retention period.
    lost = started_job(base, "local", f"{dead_pid()}:{time.time() - 7200:.6f}")
    now = time.time()
    assert remove_expired(site(base), now=now) == []
    outcome = json.loads((lost / CONTROL_DIR / "outcome.json").read_text())
    assert outcome["state"] == "lost"
    assert remove_expired(site(base), now=now + RETENTION - 60) == []
    assert remove_expired(site(base), now=now + RETENTION + 60) == [str(lost)]
    assert not lost.exists()


def test_a_dry_run_records_nothing(base: Path) -> None:
    lost = started_job(base, "local", f"{dead_pid()}:{time.time() - 7200:.6f}")
    assert remove_expired(site(base), dry_run=True, now=time.time() + 10 * RETENTION) == []
    assert not (lost / CONTROL_DIR / "outcome.json").exists()


def test_jobs_of_a_scheduler_that_cannot_answer_are_kept(
    base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = started_job(base, "nonesuch", "42")
    assert remove_expired(site(base), now=time.time() + 10 * RETENTION) == []
    assert unknown.is_dir()
    assert not (unknown / CONTROL_DIR / "outcome.json").exists()
    assert "cannot ask nonesuch about 1 job(s), keeping them" in caplog.text
