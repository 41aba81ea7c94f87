"""The wall clock of the SSH site entry stepped an hour back while its Slurm job runs, under
libfaketime (``tests/support/clock_step.py``) and a real Slurm (``tests/support/slurm.py``).

Site entries share one scheduler answer per poll interval through a file in the work base,
stamped with the wall clock (entries on other login nodes read it too). An answer written just
before a step back is an hour "in the future" afterwards: it must count as stale, or the job's
end goes unseen for the hour. The same checks as ``test_slurm_kills``: completed once, the
same Slurm job, SHA-256 equal both ways, no run past lease + 60 s.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator

import pytest

from tests.resilience.test_slurm_kills import _slurm_id, _slurm_jobs
from tests.resilience.test_ssh_faults import (
    RESULT,
    SOLVER,
    SshRig,
    _write_bridge,
    assert_proven,
    run_solver,
)
from tests.support.clock_step import ClockStep, hours_stepped, sweep_stale_shared_memory
from tests.support.fault_proxy import FaultProxy
from tests.support.pull import wait_until
from tests.support.site_toml import write_site_toml
from tests.support.slurm import SlurmCluster
from tests.support.sshd import start_sshd_for_test

pytest_plugins = ["tests.integration.slurm_fixtures"]

HOUR = 3600.0


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClockStep]:
    yield ClockStep(tmp_path_factory.mktemp("slurm-site-clock"))
    sweep_stale_shared_memory()


@pytest.fixture(scope="module")
def rig(slurm: SlurmCluster, clock: ClockStep,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshRig]:  # fmt: skip
    root = tmp_path_factory.mktemp("ssh-slurm-clock")
    (root / "work").mkdir()
    site = write_site_toml(
        root / "site.toml",
        site={"name": "res-slurm-clock", "work_base": root / "work",
              "log_file": root / "site.log", "idle_timeout": "5s"},
        # 2 s: at 1 s and more the site's entries share the scheduler's answers (the cache).
        scheduler={"poll_interval": 2, "retries": 5, "retry_wait": "0.1s",
                   "command_timeout": 20},
        commands={"solve": {
            "program": SOLVER, "args": [root / "counter.txt", "{seconds}", "{size}"],
            "scheduler": "slurm",
            "params": {"seconds": {"type": "float", "default": 1.0},
                       "size": {"type": "int", "default": RESULT}},
        }},
    )  # fmt: skip
    # sshd gives a forced command a bare environment: the cluster and the clock go on its line.
    env = {"SLURM_CONF": slurm.env["SLURM_CONF"], **clock.env()}
    python = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), sys.executable])
    sshd = start_sshd_for_test(root / "sshd", site, python=python)
    proxy = FaultProxy(sshd.port)
    yield SshRig(root, sshd, proxy, _write_bridge(root, sshd, proxy), root / "work",
                 root / "counter.txt")  # fmt: skip
    proxy.close()
    sshd.stop()


def test_site_entry_clock_step_back_while_the_slurm_job_runs(
    rig: SshRig, slurm: SlurmCluster, clock: ClockStep, request: pytest.FixtureRequest
) -> None:
    request.node.user_properties.extend([
        ("fault", "wall clock of the site entry stepped -3600 s while the Slurm job runs"),
        ("path", "ssh + Slurm (sbatch, squeue, sacct)"),
        ("expected", "the job's end is seen at once; completed, same Slurm job, SHA-256 equal"),
    ])  # fmt: skip
    cache = rig.work / ".mint-bridge-status-slurm.json"
    seen: dict[str, str] = {}

    def jump(job_id: str) -> None:
        wait_until(lambda: rig.runs(job_id) > 0 and cache.exists(),
                   "the solver to start under Slurm and its status to be shared")  # fmt: skip
        seen["first"] = _slurm_id(rig, job_id)
        clock.step(-HOUR)

    try:
        got = run_solver(rig, "direct", seconds=6.0, during=jump)
    finally:
        clock.step(-clock.offset)
    assert_proven(rig, got, end_file="outcome.json")
    assert seen["first"].isdigit() and _slurm_id(rig, got.job_id) == seen["first"]
    assert _slurm_jobs(slurm, got.job_id) == [seen["first"]]
    assert hours_stepped((rig.root / "site.log").read_text(), got.job_id) == -1
