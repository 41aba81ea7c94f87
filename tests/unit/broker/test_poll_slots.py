"""A token's long-poll limit holds across broker instances on one PostgreSQL database: two
apps (two instances, each its own store, pool, change feed and notifier) on a real server.
A poll over the limit is refused with 429 ``rate_limited`` on whichever instance it lands, and
the slots of an instance that was killed (its rows never deleted) lapse by their own time."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from broker.app import create_app
from broker.auth import new_token
from broker.config import BrokerConfig
from broker.defaults import POLL_SLOT_GRACE as GRACE_SECONDS
from broker.runtime import EXTENSION, Broker
from broker.store import NewJob, Scope
from broker.store.locations import open_store, parse_store_url
from broker.store.postgres import PostgresStore
from tests.support.postgres import empty

LIMIT = 3
SITE = "slot-site"
T0 = 1_000_000.0


def broker_of(app: Flask) -> Broker:
    broker = app.extensions[EXTENSION]
    assert isinstance(broker, Broker)
    return broker


@pytest.fixture
def instances(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Flask, Flask]]:
    empty(postgres_url)
    apps = []
    for name in ("a", "b"):
        config = BrokerConfig(data_dir=str(tmp_path / name), tls=False, host="127.0.0.1",
                              store_location=parse_store_url(postgres_url),
                              long_polls_per_token=LIMIT)  # fmt: skip
        apps.append(create_app(config, housekeeping=False))
    yield apps[0], apps[1]
    for app in apps:
        broker_of(app).notifier.shut_down()
        broker_of(app).store.close()


def claim(app: Flask, headers: dict[str, str], agent: str, wait: int = 30) -> Any:
    return app.test_client().post(f"/api/v1/agent/claim?wait={wait}", headers=headers,
                                  json={"agent_id": agent})  # fmt: skip


def held(app: Flask, token_id: str) -> int:
    store = broker_of(app).store
    assert isinstance(store, PostgresStore)
    return store.polls_held(token_id, time.time())


def wait_until_held(app: Flask, token_id: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while held(app, token_id) != count:
        assert time.monotonic() < deadline, f"{held(app, token_id)} slots held, not {count}"
        time.sleep(0.02)


def test_one_poll_over_the_limit_is_refused_on_either_instance(
    instances: tuple[Flask, Flask],
) -> None:
    a, b = instances
    token, record = new_token(Scope.SITE, SITE, 0.0)
    broker_of(a).store.create_token(record)
    headers = {"Authorization": f"Bearer {token}"}
    with ThreadPoolExecutor(max_workers=LIMIT) as pool:
        # Two polls wait on a, one on b: each instance alone is below the limit.
        polls = [pool.submit(claim, app, headers, f"agent-{i}")
                 for i, app in enumerate((a, a, b))]  # fmt: skip
        wait_until_held(a, record.token_id, LIMIT)
        for app in (b, a):
            refused = claim(app, headers, "one-too-many")
            assert refused.status_code == 429, refused.get_data(as_text=True)
            error = refused.get_json()["error"]
            assert error["code"] == "rate_limited"
            assert f"already holds {LIMIT} long polls" in error["message"]
            assert refused.headers["Retry-After"] == "1"
        # The waiting polls were not disturbed: each takes one of the jobs submitted now.
        ids = [submit(a) for _ in range(LIMIT)]
        answers = [p.result(timeout=30) for p in polls]
    assert [r.status_code for r in answers] == [200] * LIMIT
    assert sorted(r.get_json()["job"]["job_id"] for r in answers) == sorted(ids)
    wait_until_held(a, record.token_id, 0)  # every slot was given back on return
    again = claim(b, headers, "later", wait=1)
    assert again.status_code == 204


def submit(app: Flask) -> str:
    store = broker_of(app).store
    spec = NewJob(job_id=str(uuid.uuid4()), client="node", site=SITE, command="echo",
                  params={}, inputs=())  # fmt: skip
    job, _ = store.create_job(spec, time.time())
    store.submit(job.job_id, time.time())
    return job.job_id


def test_a_killed_instances_slots_lapse_after_the_poll_wait_and_the_grace(
    postgres_url: str,
) -> None:
    """Instance a takes every slot, then dies without returning them (its rows stay): b is
    refused until the rows' time has passed, then served."""
    empty(postgres_url)
    location = parse_store_url(postgres_url)
    a, b = open_store(location, pool_size=2), open_store(location, pool_size=2)
    try:
        until = T0 + 30 + GRACE_SECONDS  # a 30 s poll
        assert [a.hold_poll(f"p{i}", "tok", LIMIT, until, T0) for i in range(LIMIT)] == [True] * 3
        a.close()  # as kill -9: end_poll never runs
        assert b.hold_poll("q1", "tok", LIMIT, T0 + 60, T0 + 30) is False
        assert b.hold_poll("q2", "other-token", LIMIT, T0 + 60, T0 + 30) is True
        assert b.hold_poll("q3", "tok", LIMIT, T0 + 90, until + 0.001) is True
        assert isinstance(b, PostgresStore) and b.polls_held("tok", until + 0.001) == 1
    finally:
        b.close()


def test_racing_holds_on_two_instances_take_exactly_the_limit(postgres_url: str) -> None:
    empty(postgres_url)
    location = parse_store_url(postgres_url)
    stores = [open_store(location, pool_size=8) for _ in range(2)]
    start = threading.Barrier(16)

    def hold(i: int) -> bool:
        start.wait()
        return stores[i % 2].hold_poll(f"p{i}", "tok", 5, T0 + 60, T0)

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            taken = list(pool.map(hold, range(16)))
        assert taken.count(True) == 5
        for store in stores:
            for i in range(16):
                store.end_poll(f"p{i}")
        assert stores[0].hold_poll("again", "tok", 5, T0 + 60, T0) is True
    finally:
        for store in stores:
            store.close()
