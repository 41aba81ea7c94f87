"""``POST /api/v1/agent/claim`` with the agent's ``commands``, on the app with a SQLite store:
the body is checked field by field, and the original pollers' whitelisted jobs are left to
them while a job nobody else runs still reaches the agent."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from flask import Flask

from broker.app import create_app
from broker.config import BrokerConfig
from broker.legacy.config import LegacyConfig
from broker.store import NewJob, Scope, State
from tests.unit.broker.test_app import Clock, auth, broker_of, clock

__all__ = ["clock"]  # a fixture used here by name

POLLER = "/opt/x/run.sh"


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Flask:
    legacy = LegacyConfig(enabled=True, sites={"s": (POLLER,)})
    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1", queue_ttl=3600,
                          retention=86400, legacy=legacy)  # fmt: skip
    return create_app(config, housekeeping=False, clock=clock)


def queued(app: Flask, command: str) -> str:
    store, now = broker_of(app).store, broker_of(app).clock()
    spec = NewJob(job_id=str(uuid.uuid4()), client="c", site="s", command=command, params={},
                  inputs=())  # fmt: skip
    store.create_job(spec, now)
    store.submit(spec.job_id, now)
    return spec.job_id


def test_a_listed_claim_leaves_the_pollers_jobs_and_takes_the_rest(app: Flask) -> None:
    agent = auth(app, Scope.SITE, "s")
    client = app.test_client()
    for_poller, unknown, mine = (queued(app, c) for c in (POLLER, "rm", "solve"))
    body = {"agent_id": "a1", "commands": ["solve", "mint-bridge-probe"]}
    taken = [client.post("/api/v1/agent/claim", json=body, headers=agent) for _ in range(3)]
    assert [r.status_code for r in taken] == [200, 200, 204]
    # The oldest job nobody else runs reaches the agent (its site rejects it), then its own.
    assert [r.get_json()["job"]["job_id"] for r in taken[:2]] == [unknown, mine]
    left = broker_of(app).store.get_job(for_poller)
    assert left is not None and left.state is State.QUEUED
    older = client.post("/api/v1/agent/claim", json={"agent_id": "a2"}, headers=agent)
    assert older.status_code == 200 and older.get_json()["job"]["job_id"] == for_poller


@pytest.mark.parametrize(
    ("commands", "field"),
    [(None, "commands"), ([], "commands"), (["a", "a"], "commands[1]"), (["\x07"], "commands[0]")],
)
def test_a_bad_list_is_refused_naming_the_field(app: Flask, commands: object, field: str
                                                ) -> None:  # fmt: skip
    queued(app, "solve")
    answer = app.test_client().post("/api/v1/agent/claim", headers=auth(app, Scope.SITE, "s"),
                                    json={"agent_id": "a1", "commands": commands})  # fmt: skip
    error = answer.get_json()["error"]
    assert answer.status_code == 400 and error["code"] == "invalid_field"
    assert error["field"] == field and field in error["message"]
