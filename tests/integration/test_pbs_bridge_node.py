"""`mint-bridge run` inside a (fake) MInt PBS job: tags, walltime bound, qdel, overall timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bridge.core.errors import ExitCode
from tests.integration.conftest import SiteEnv
from tests.integration.test_ssh_resilience import counter_lines
from tests.support.waiting import wait_for


def pbs_env(tmp_path: Path, walltime: int = 600) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PBS_JOBID="4242.mint-pbs",
        PBS_O_WORKDIR=str(tmp_path),
        PBS_QUEUE="batch",
        PBS_WALLTIME=str(walltime),
    )
    return env


def bridge(
    bridge_config: Path, tmp_path: Path, env: dict[str, str], *args: str
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(bridge_config), *args]
    return subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_remote_job_is_tagged_and_bounded_by_the_mint_walltime(
    bridge_config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    job_id = "7a3d5b9c-b5e4-4a0d-8213-4d5e6f7a8b92"
    proc = bridge(
        bridge_config, tmp_path, pbs_env(tmp_path, walltime=600),
        "--site", "site", "--command", "fail", "-p", "code=0", "--job-id", job_id,
    )  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    control = site_env.work_base / job_id / ".mint-bridge"
    request = json.loads((control / "request.json").read_text())["request"]
    assert request["metadata"]["mint_job_id"] == "4242.mint-pbs"
    assert request["metadata"]["module_dir"] == str(tmp_path)
    spec = json.loads((control / "local-spec.json").read_text())
    assert spec["walltime"] is not None and 0 < spec["walltime"] <= 600


def test_no_pbs_walltime_leaves_the_site_limit_alone(
    bridge_config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    job_id = "8b4e6c0d-c6f5-4b1e-9324-5e6f7a8b9ca3"
    proc = bridge(
        bridge_config, tmp_path, pbs_env(tmp_path), "--site", "site", "--command", "fail",
        "-p", "code=0", "--job-id", job_id, "--no-pbs-walltime",
    )  # fmt: skip
    proc.communicate(timeout=60)
    spec = json.loads(
        (site_env.work_base / job_id / ".mint-bridge" / "local-spec.json").read_text()
    )
    assert spec["walltime"] is None


def test_qdel_sigterm_cancels_the_remote_job(
    bridge_config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    before = len(counter_lines(site_env))
    proc = bridge(
        bridge_config, tmp_path, pbs_env(tmp_path), "--site", "site", "--command", "once",
        "-p", "seconds=120",
    )  # fmt: skip
    wait_for(lambda: len(counter_lines(site_env)) > before, what="the remote job to start")
    solver = int(counter_lines(site_env)[-1])
    proc.send_signal(signal.SIGTERM)  # what pbs_mom does on qdel, before SIGKILL
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.CANCELLED
    assert b"stopped by signal SIGTERM" in err
    wait_for(lambda: not psutil.pid_exists(solver) or psutil.Process(solver).status() == "zombie",
             timeout=10, what="the remote solver to be gone")  # fmt: skip


def test_overall_timeout_cancels_and_says_so(
    bridge_config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    before = len(counter_lines(site_env))
    env = dict(os.environ)
    proc = bridge(
        bridge_config, tmp_path, env, "--site", "site", "--command", "once", "-p", "seconds=120",
        "--timeout", "3",
    )  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.TIMED_OUT, err.decode()
    assert b"overall timeout of 3 s" in err
    assert len(counter_lines(site_env)) == before + 1
    solver = int(counter_lines(site_env)[-1])
    wait_for(lambda: not psutil.pid_exists(solver) or psutil.Process(solver).status() == "zombie",
             timeout=10, what="the remote solver to be gone")  # fmt: skip
    assert time.time() > 0
