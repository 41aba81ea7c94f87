"""A dropped connection, a killed bridge: the job runs once, and a cancel reaches the site."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from bridge.core.errors import ExitCode
from bridge.core.job import JobRequest
from bridge.site import accepted_job, job_start
from bridge.site.config import load_site_config
from bridge.site.workdir import WorkDir
from schedulers.local import ENDED_RUNNER_ID
from tests.integration.conftest import SiteEnv
from tests.support.sshd import Sshd
from tests.support.waiting import wait_until


def start_bridge(bridge_config: Path, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(bridge_config), *args]
    return subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def counter_lines(site_env: SiteEnv) -> list[str]:
    path = site_env.private / "counter.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_dropped_connection_reattaches_and_job_runs_once(
    bridge_config: Path, sshd: Sshd, site_env: SiteEnv, tmp_path: Path
) -> None:
    before = len(counter_lines(site_env))
    job_id = "5d1b3f7a-93c2-4e8b-a0f1-2b3c4d5e6f70"
    proc = start_bridge(
        bridge_config, tmp_path, "--site", "site", "--command", "once", "-p", "seconds=3",
        "--job-id", job_id, "-v",
    )  # fmt: skip
    wait_until(lambda: len(counter_lines(site_env)) > before, what="the job to start")
    victims = sshd.connection_processes()
    assert victims, "the bridge's connection must be visible as an sshd child"
    for child in victims:
        child.kill()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"reconnecting" in err
    assert b"re-attached" in err
    assert len(counter_lines(site_env)) == before + 1, "the job must run exactly once"
    assert (tmp_path / "done.txt").read_text() == "done\n"
    assert out == b"working 0\nworking 1\nworking 2\n"  # log resumed without gaps or repeats


def test_sigterm_cancels_the_job_at_the_site(
    bridge_config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    before = len(counter_lines(site_env))
    job_id = "6e2c4a8b-a4d3-4f9c-b102-3c4d5e6f7a81"
    proc = start_bridge(
        bridge_config, tmp_path, "--site", "site", "--command", "once", "-p", "seconds=60",
        "--job-id", job_id,
    )  # fmt: skip
    wait_until(lambda: len(counter_lines(site_env)) > before, what="the job to start")
    solver_pid = int(counter_lines(site_env)[-1])
    assert psutil.pid_exists(solver_pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.CANCELLED, err.decode()
    assert b"cancelled at the site" in err
    wait_until(lambda: not _alive(solver_pid), limit=10, what="the solver to be gone")
    record = json.loads((site_env.work_base / job_id / ".mint-bridge" / "exit.json").read_text())
    assert record["state"] == "cancelled"


def test_sigterm_during_local_site_job_cancels_too(
    bridge_config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    before = len(counter_lines(site_env))
    proc = start_bridge(
        bridge_config, tmp_path, "--site", "local", "--command", "once", "-p", "seconds=60"
    )
    wait_until(lambda: len(counter_lines(site_env)) > before, what="the job to start")
    solver_pid = int(counter_lines(site_env)[-1])
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.CANCELLED
    wait_until(lambda: not _alive(solver_pid), limit=10, what="the solver to be gone")


def test_a_start_cut_off_before_its_id_was_recorded_runs_once_over_ssh(
    bridge_config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    """The site entry died between the local scheduler's submit and the record of its id (as a
    kill -9 would leave it): the bridge's retried submit follows that job, never starts it again."""
    before = len(counter_lines(site_env))
    job_id = "7f3d5b9c-b5e4-4a0d-8c13-4d5e6f7a8b92"
    site = load_site_config(str(site_env.site_config))
    request = JobRequest.from_message(
        {"job_id": job_id, "command": "once", "params": {"seconds": 2}}
    )
    command, values = site.check_request(request)
    wd = WorkDir(site.work_base, job_id)
    wd.create()
    job = accepted_job.AcceptedJob(request, command, values, wd)
    with wd.locked():
        accepted_job.save_accepted(job)
        wd.write_json("inputs.json", {})
        first = job_start.start(job, site.scheduler(command))
    os.unlink(wd.control_file("native_id"))
    wait_until(lambda: len(counter_lines(site_env)) > before, what="the job to start")

    proc = start_bridge(
        bridge_config, tmp_path, "--site", "site", "--command", "once", "-p", "seconds=2",
        "--job-id", job_id,
    )  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out == b"working 0\nworking 1\n"
    assert (tmp_path / "done.txt").read_text() == "done\n"
    assert len(counter_lines(site_env)) == before + 1, "the job must run exactly once"
    # Recovery records the job's own supervisor, or, when the 2 s job was over before the bridge
    # came back (a loaded machine), the marker of an ended one: never a second start.
    assert wd.native_id() in (first, ENDED_RUNNER_ID)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
