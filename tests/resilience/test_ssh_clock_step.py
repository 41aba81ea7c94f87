"""The wall clock of the SSH site entry (the forced command and the job supervisor it forks)
stepped by an hour, forward and back, while the job runs, under libfaketime
(``tests/support/clock_step.py``). The same checks as ``test_ssh_faults``: exactly one terminal
state recorded once and delivered, the solver ran once, SHA-256 equal both ways, no run past
lease + 60 s. The site entry's heartbeats and waits are measured by its monotonic clock, so a
step costs neither the session nor the job.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator

import pytest

from tests.resilience.test_ssh_faults import (
    SshRig,
    _write_bridge,
    _write_site,
    assert_proven,
    job_log,
    run_solver,
)
from tests.support.clock_step import ClockStep, hours_stepped, sweep_stale_shared_memory
from tests.support.fault_proxy import FaultProxy
from tests.support.pull import wait_until
from tests.support.sshd import start_sshd_for_test

HOUR = 3600.0


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClockStep]:
    yield ClockStep(tmp_path_factory.mktemp("site-clock"))
    sweep_stale_shared_memory()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, clock: ClockStep) -> Iterator[SshRig]:
    root = tmp_path_factory.mktemp("ssh-clock")
    (root / "work").mkdir()
    site = _write_site(root)
    # sshd starts the forced command with a bare environment: the preload goes on its line.
    words = [f"{name}={value}" for name, value in clock.env().items()]
    python = shlex.join(["env", *words, sys.executable])
    sshd = start_sshd_for_test(root / "sshd", site, python=python)
    proxy = FaultProxy(sshd.port)
    yield SshRig(root, sshd, proxy, _write_bridge(root, sshd, proxy), root / "work",
                 root / "counter.txt")  # fmt: skip
    proxy.close()
    sshd.stop()


@pytest.mark.parametrize("step", [HOUR, -HOUR], ids=["forward", "back"])
def test_site_entry_clock_step_while_the_job_runs(
    rig: SshRig, clock: ClockStep, request: pytest.FixtureRequest, step: float
) -> None:
    request.node.user_properties.extend([
        ("fault", f"wall clock of the site entry stepped {step:+.0f} s while the solver runs"),
        ("path", "ssh (paramiko, sshd, forced command)"),
        ("expected", "completed once, no reconnect, SHA-256 equal"),
    ])  # fmt: skip

    def jump(job_id: str) -> None:
        wait_until(lambda: rig.runs(job_id) > 0, "the solver to start")
        clock.step(step)

    try:
        # The solver runs past a heartbeat (every few seconds) after the step.
        got = run_solver(rig, "direct", seconds=8.0, during=jump)
    finally:
        clock.step(-clock.offset)
    assert_proven(rig, got)
    assert "reconnecting" not in job_log(got.err), job_log(got.err)
    # The step reached the site entry: its log lines of the job are an hour apart.
    assert hours_stepped((rig.root / "site.log").read_text(), got.job_id) == step / HOUR
