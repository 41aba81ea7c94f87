"""The broker's clock keeps its pace while the system clock is stepped (``broker.clock``)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from broker.app import create_app
from broker.clock import SteadyClock
from broker.config import BrokerConfig
from broker.housekeeping import run_once
from broker.runtime import EXTENSION, Broker
from broker.store import JobRecord, NewJob, State

LEASE = 10.0


class Clocks:
    """A system clock that a test steps and a monotonic clock that only runs forward."""

    def __init__(self) -> None:
        self.wall, self.mono = 1_800_000_000.0, 5_000.0

    def run(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def steady(clocks: Clocks) -> SteadyClock:
    return SteadyClock(lambda: clocks.wall, lambda: clocks.mono)


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_step_of_the_system_clock_does_not_move_the_brokers(
    clocks: Clocks, steady: SteadyClock, step: float
) -> None:
    start = steady()
    assert start == clocks.wall
    clocks.run(4)
    clocks.wall += step
    clocks.run(1)
    assert steady() == start + 5
    assert steady.step() == step


def test_a_step_is_logged_once_with_its_size(
    clocks: Clocks, steady: SteadyClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "broker.clock")
    clocks.run(1.5)
    assert steady.report_step() is None  # no step: nothing to say
    clocks.wall += 3600
    assert steady.report_step() == 3600
    assert steady.report_step() is None  # the same step, not again
    clocks.wall -= 3600
    assert steady.report_step() == 0
    assert [r.getMessage() for r in caplog.records] == [
        "the system clock moved +3600 s from the broker's clock; leases, timeouts and recorded "
        "times keep the broker's clock until it restarts",
        "the system clock is back in step with the broker's clock",
    ]


def _running(broker: Broker, now: float) -> str:
    """A job whose agent started it at ``now`` with a 10 s lease."""
    new = NewJob(job_id=str(uuid.uuid4()), client="node1", site="s", command="c", params={},
                 inputs=())  # fmt: skip
    job, _ = broker.store.create_job(new, now)
    broker.store.submit(job.job_id, now)
    claim = broker.store.claim("s", "agent-1", LEASE, now)
    assert claim is not None and claim.job.job_id == job.job_id
    broker.store.mark_running(job.job_id, claim.epoch, None, LEASE, now)
    return job.job_id


def _job(broker: Broker, job_id: str) -> JobRecord:
    job = broker.store.get_job(job_id)
    assert job is not None
    return job


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_live_lease_outlives_a_clock_step_and_a_dead_one_ends_on_time(
    tmp_path: Path, clocks: Clocks, steady: SteadyClock, step: float
) -> None:
    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1")
    app = create_app(config, housekeeping=False, clock=steady)
    broker = app.extensions[EXTENSION]
    assert isinstance(broker, Broker)
    job_id = _running(broker, steady())
    clocks.run(5)
    clocks.wall += step  # in the middle of the 10 s lease
    run_once(broker, broker.clock())
    assert _job(broker, job_id).state is State.RUNNING
    assert not _job(broker, job_id).agent_lost  # not expired early by a step forward
    clocks.run(5.5)  # the agent fell silent: 10.5 s since it started the job
    run_once(broker, broker.clock())
    assert _job(broker, job_id).agent_lost  # not kept alive for an hour by a step back


def test_the_broker_keeps_a_steady_clock_unless_a_test_gives_it_one(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1")
    broker = create_app(config, housekeeping=False).extensions[EXTENSION]
    assert isinstance(broker, Broker) and isinstance(broker.clock, SteadyClock)
