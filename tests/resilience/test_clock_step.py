"""The wall clock of one process stepped by an hour, forward and back, while a job is in flight:
the broker (gunicorn, master and worker) and the agent on the pull path, under libfaketime
(``tests/support/clock_step.py``). The same checks as ``test_pull_faults``: exactly one
terminal state, the solver ran once, SHA-256 equal both ways, no run past lease + 60 s.

What a step must not do: expire a live lease early (a step forward) or keep a dead agent's lease
for the hour of a step back. The broker measures leases by a clock that a step does not move
(``broker.clock``), the agent renews by its monotonic clock; both are checked here by the
broker's log (no lease expiry for a live agent) and by an agent killed after a step back,
whose lease must lapse within the lease, not an hour later.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.resilience.test_pull_faults import LEASE, Rig, assert_proven, make_rig, run_solver
from tests.support.broker import BrokerFactory
from tests.support.clock_step import ClockStep, hours_stepped, sweep_stale_shared_memory
from tests.support.pull import wait_until

HOUR = 3600.0
STEPS = {"forward": HOUR, "back": -HOUR}


@pytest.fixture(scope="module")
def clocks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ClockStep]]:
    root = tmp_path_factory.mktemp("clocks")
    yield {name: ClockStep(root / name) for name in ("broker", "agent")}
    sweep_stale_shared_memory()  # what the processes killed here left


@pytest.fixture(scope="module")
def rig(broker_factory: BrokerFactory, tmp_path_factory: pytest.TempPathFactory,
        clocks: dict[str, ClockStep]) -> Iterator[Rig]:  # fmt: skip
    yield from make_rig(broker_factory, tmp_path_factory, "res-clock",
                        broker_env=clocks["broker"].env(),
                        agent_env=clocks["agent"].env())  # fmt: skip


@pytest.fixture(autouse=True)
def _clocks_back_in_step(clocks: dict[str, ClockStep]) -> Iterator[None]:
    yield
    for clock in clocks.values():
        clock.step(-clock.offset)


def _describe(request: pytest.FixtureRequest, fault: str, expected: str) -> None:
    request.node.user_properties.extend(
        [("fault", fault), ("path", "broker, agent leg"), ("expected", expected)]
    )


def _broker_log(rig: Rig) -> str:
    return rig.broker.log_path.read_text(errors="replace")


def _lease_expiries(rig: Rig, job_id: str) -> list[str]:
    return [line for line in _broker_log(rig).splitlines()
            if f"{job_id}: lease expired" in line]  # fmt: skip


@pytest.mark.parametrize("name", ["broker", "agent"])
def test_libfaketime_steps_the_wall_clock_and_leaves_the_monotonic_one(
    clocks: dict[str, ClockStep], name: str
) -> None:
    # The rig's own check: a process under it sees the step in time.time() only, and sleeps.
    for step in (HOUR, -2 * HOUR):
        clocks[name].step(step)
        offset, monotonic_untouched = clocks[name].probe()
        assert offset == clocks[name].offset
        assert monotonic_untouched


@pytest.mark.parametrize("direction", list(STEPS))
@pytest.mark.parametrize("where", ["broker", "agent"])
def test_clock_step_while_the_job_runs(rig: Rig, clocks: dict[str, ClockStep],
                                       request: pytest.FixtureRequest, where: str,
                                       direction: str) -> None:  # fmt: skip
    step = STEPS[direction]
    _describe(request, f"wall clock of the {where} stepped {step:+.0f} s while the solver runs",
              "finished, solver once, SHA-256 equal; the lease never expires")  # fmt: skip

    def jump(job_id: str) -> None:
        wait_until(lambda: rig.runs("agent", job_id) > 0, "the solver to start")
        clocks[where].step(step)

    # The solver runs past two lease renewals (every 2 s) after the step.
    got = run_solver(rig, "agent", seconds=6.0, during=jump)
    assert_proven(rig, "agent", got)
    assert _lease_expiries(rig, got.job_id) == [], _broker_log(rig)[-3000:]
    # The step reached the process: the broker says so; the agent's log lines are an hour apart.
    if where == "broker":
        assert f"the system clock moved {step:+.0f} s from the broker's clock" in _broker_log(rig)
    else:
        site_log = (rig.root / "agent" / "site.log").read_text()
        assert hours_stepped(site_log, got.job_id) == step / HOUR


def test_a_dead_agents_lease_lapses_on_time_after_the_broker_clock_steps_back(
    rig: Rig, clocks: dict[str, ClockStep], request: pytest.FixtureRequest
) -> None:
    _describe(request, "broker wall clock stepped -3600 s, then kill -9 of the agent",
              "agent lost within the lease, not an hour later; restart re-attaches; finished",
              )  # fmt: skip

    def jump_then_kill(job_id: str) -> None:
        wait_until(lambda: rig.runs("agent", job_id) > 0, "the solver to start")
        clocks["broker"].step(-HOUR)
        rig.agents["agent"].kill9()
        # Within the lease plus housekeeping, not the hour the step would add to it.
        wait_until(lambda: _lease_expiries(rig, job_id), "the dead agent's lease to lapse",
                   limit=LEASE + 30)  # fmt: skip
        rig.restart_agent("agent")

    got = run_solver(rig, "agent", seconds=20.0, during=jump_then_kill)
    assert_proven(rig, "agent", got)
    (lapsed,) = _lease_expiries(rig, got.job_id)
    assert lapsed.endswith(f"{got.job_id}: lease expired while running; agent lost"), lapsed
