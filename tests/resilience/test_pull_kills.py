"""The pull path with its processes killed by SIGKILL at the steps ``test_pull_faults`` leaves
out: the agent and the broker (gunicorn, restarted on the same store) at staging in,
collecting (the solver has ended, its results are being gathered), staging out and
acknowledged. The same rig and the same checks as there: exactly one terminal state, the
solver ran once, SHA-256 equal both ways, no stuck run past lease + 60 s.

A transfer is held open with a throttle on the agent's leg so the kill lands inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.resilience.test_pull_faults import (
    INPUT,
    RESULT,
    Rig,
    assert_proven,
    make_rig,
    run_solver,
)
from tests.support.broker import BrokerFactory
from tests.support.fault_proxy import Fault
from tests.support.pull import wait_until

SLOW = 512 * 1024  # bytes per second: a 1 MiB transfer stays open for about 2 s
STEPS = ("staging_in", "collecting", "staging_out", "acknowledged")


@pytest.fixture(scope="module")
def rig(broker_factory: BrokerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from make_rig(broker_factory, tmp_path_factory, "res-kills")


def _exited(rig: Rig, job_id: str) -> bool:
    return (rig.work("agent", job_id) / ".mint-bridge" / "exit.json").exists()


def _acknowledged(rig: Rig, job_id: str) -> bool:
    text = rig.broker.log_path.read_text(errors="replace")
    return f"{job_id}: acknowledged" in text


def _reach(rig: Rig, job_id: str, step: str) -> None:
    """Return once the job on the agent's leg is at ``step``."""
    base = rig.agent_proxy.carried.copy()
    ready: dict[str, Callable[[], bool]] = {
        "staging_in": lambda: rig.agent_proxy.carried["down"] - base["down"] > INPUT // 2,
        "collecting": lambda: _exited(rig, job_id),
        "staging_out": lambda: rig.agent_proxy.carried["up"] - base["up"] > RESULT // 2,
        "acknowledged": lambda: _acknowledged(rig, job_id),
    }
    wait_until(ready[step], f"the job to reach {step}")


def _slow_transfer(rig: Rig, step: str) -> None:
    rig.agent_proxy.disarm()
    if step == "staging_in":
        rig.agent_proxy.arm(Fault("throttle", "down", INPUT // 4, rate=SLOW))
    if step == "staging_out":
        rig.agent_proxy.arm(Fault("throttle", "up", RESULT // 4, rate=SLOW))


def _describe(request: pytest.FixtureRequest, fault: str) -> None:
    request.node.user_properties.extend(
        [("fault", fault), ("path", "broker, agent leg"),
         ("expected", "finished, solver once, SHA-256 equal")]
    )  # fmt: skip


@pytest.mark.parametrize("step", STEPS)
def test_agent_kill9_at_step(rig: Rig, request: pytest.FixtureRequest, step: str) -> None:
    _describe(request, f"kill -9 of the agent at {step}, then a restart")
    _slow_transfer(rig, step)

    def kill(job_id: str) -> None:
        _reach(rig, job_id, step)
        rig.agents["agent"].kill9()
        rig.agent_proxy.disarm()  # the throttle ends with the killed connection
        rig.restart_agent("agent")

    got = run_solver(rig, "agent", during=kill)
    assert_proven(rig, "agent", got)


@pytest.mark.parametrize("step", STEPS)
def test_broker_kill9_at_step(rig: Rig, request: pytest.FixtureRequest, step: str) -> None:
    _describe(request, f"kill -9 of gunicorn at {step}, restart on the same store")
    _slow_transfer(rig, step)

    def kill(job_id: str) -> None:
        _reach(rig, job_id, step)
        rig.broker.kill9()
        rig.agent_proxy.disarm()
        rig.broker.restart()

    got = run_solver(rig, "agent", during=kill)
    assert_proven(rig, "agent", got)
