"""Which sites a broker serves and whether their agents are online (``broker.sites``), in the
app with Flask's test client and a fake clock; plus the hand-over rules the claim view adds
(a revoked token's waiting claim passes its wakeup on) and ``[jobs] agent_absent_after``.

Real processes (gunicorn, TLS, agents, ``mint-bridge run``):
tests/integration/test_pull_handover.py.
"""

from __future__ import annotations

import shlex
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from broker import api_client
from broker.app import create_app
from broker.auth import new_token
from broker.config import BrokerConfig, load_config
from broker.runtime import EXTENSION, Broker
from broker.sites import elapsed
from broker.store import Scope
from tests.support.waiting import wait_until

T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Flask:
    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1", queue_ttl=86400,
                          agent_absent_after=120, source=str(tmp_path / "broker.toml"))  # fmt: skip
    return create_app(config, housekeeping=False, clock=clock)


def broker_of(app: Flask) -> Broker:
    broker = app.extensions[EXTENSION]
    assert isinstance(broker, Broker)
    return broker


def token(app: Flask, scope: Scope, subject: str) -> tuple[str, dict[str, str]]:
    text, record = new_token(scope, subject, 0.0)
    broker_of(app).store.create_token(record)
    return record.token_id, {"Authorization": f"Bearer {text}"}


def create(app: Flask, headers: dict[str, str], site: str) -> Any:
    body = {"job_id": str(uuid.uuid4()), "site": site, "command": "x"}
    return app.test_client().post("/api/v1/jobs", json=body, headers=headers)


def queued(app: Flask, headers: dict[str, str], site: str) -> str:
    response = create(app, headers, site)
    assert response.status_code == 201, response.get_json()
    job_id = str(response.get_json()["job_id"])
    submitted = app.test_client().post(f"/api/v1/jobs/{job_id}/submit", headers=headers)
    assert submitted.status_code == 200
    return job_id


def job_doc(app: Flask, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = app.test_client().get(f"/api/v1/jobs/{job_id}", headers=headers).json
    return doc


# --- refused at create ---------------------------------------------------------------------------


def test_a_job_for_a_site_without_a_token_is_refused_with_the_command_that_registers_it(
    app: Flask, tmp_path: Path
) -> None:
    _, client = token(app, Scope.CLIENT, "node1")
    response = create(app, client, "no-such-site")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "unknown_site" and error["field"] == "site"
    message = error["message"]
    assert message.startswith("no site 'no-such-site' is registered at this broker")
    command = message.split("`")[1]
    config = shlex.quote(str(tmp_path / "broker.toml"))
    assert command == f"mint-bridge broker token create --site no-such-site --config {config}"
    assert broker_of(app).store.list_jobs() == []  # nothing was created


def test_a_site_whose_tokens_were_all_revoked_is_refused_too(app: Flask) -> None:
    _, client = token(app, Scope.CLIENT, "node1")
    site_id, _ = token(app, Scope.SITE, "gone-site")
    assert create(app, client, "gone-site").status_code == 201
    broker_of(app).store.revoke_token(site_id, T0)
    response = create(app, client, "gone-site")
    assert response.status_code == 400
    assert "its tokens were revoked" in response.get_json()["error"]["message"]


def test_a_client_token_of_the_same_name_does_not_register_a_site(app: Flask) -> None:
    _, client = token(app, Scope.CLIENT, "node1")
    token(app, Scope.CLIENT, "site-b")
    assert create(app, client, "site-b").get_json()["error"]["code"] == "unknown_site"


# --- the notice while no agent is online ---------------------------------------------------------


def test_no_notice_while_the_broker_just_started(app: Flask, clock: Clock) -> None:
    _, client = token(app, Scope.CLIENT, "node1")
    token(app, Scope.SITE, "s")
    job_id = queued(app, client, "s")
    clock.now += 119  # agents had less than agent_absent_after to reach this broker
    assert job_doc(app, client, job_id)["notice"] is None


def test_a_site_no_agent_ever_polled_gets_a_notice_once_the_threshold_passed(
    app: Flask, clock: Clock
) -> None:
    _, client = token(app, Scope.CLIENT, "node1")
    token(app, Scope.SITE, "s")
    job_id = queued(app, client, "s")
    clock.now += 121
    notice = job_doc(app, client, job_id)["notice"]
    assert notice["code"] == "no_agent_online" and notice["agent_last_seen"] is None
    assert notice["message"] == ("no agent of site s has ever polled this broker; the job stays "
                                 "queued until one does (at most 1d, the broker's queue limit)")
    listed = app.test_client().get("/api/v1/jobs", headers=client).get_json()["jobs"]
    assert listed[0]["notice"] == notice


def test_the_notice_names_how_long_ago_an_agent_was_seen_and_goes_once_one_is_back(
    app: Flask, clock: Clock
) -> None:
    _, client = token(app, Scope.CLIENT, "node1")
    _, agent = token(app, Scope.SITE, "s")
    claimed = app.test_client().post("/api/v1/agent/claim", json={"agent_id": "a1"}, headers=agent)
    assert claimed.status_code == 204  # seen now, nothing to do
    clock.now += 300
    job_id = queued(app, client, "s")
    notice = job_doc(app, client, job_id)["notice"]
    assert notice["agent_last_seen"] == T0
    assert notice["message"].startswith("no agent of site s has polled the broker for 5 min;")
    got = app.test_client().post("/api/v1/agent/claim", json={"agent_id": "a1"}, headers=agent)
    assert got.status_code == 200 and got.get_json()["job"]["job_id"] == job_id
    assert job_doc(app, client, job_id)["notice"] is None  # claimed: nothing to say


def test_an_agent_seen_recently_means_no_notice(app: Flask, clock: Clock) -> None:
    _, client = token(app, Scope.CLIENT, "node1")
    _, agent = token(app, Scope.SITE, "s")
    clock.now += 1000
    app.test_client().post("/api/v1/agent/claim", json={"agent_id": "a1"}, headers=agent)
    job_id = queued(app, client, "s")
    clock.now += 60
    assert job_doc(app, client, job_id)["notice"] is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45.7, "45 s"), (119, "119 s"), (300, "5 min"), (7199, "120 min"),
     (7200, "2 h"), (3 * 86400, "3 d")],
)  # fmt: skip
def test_elapsed_reads_like_a_person_would_say_it(seconds: float, text: str) -> None:
    assert elapsed(seconds) == text


def test_agent_absent_after_is_read_from_the_jobs_table(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text('[server]\ntls = false\nhost = "127.0.0.1"\n[storage]\ndata_dir = "d"\n')
    assert load_config(str(path)).agent_absent_after == 120
    path.write_text(path.read_text() + '[jobs]\nagent_absent_after = "5m"\n')
    assert load_config(str(path)).agent_absent_after == 300


# --- the claim view: revoked tokens and the wakeup they pass on ----------------------------------


def test_a_revoked_tokens_waiting_claim_gets_401_and_the_next_claim_takes_the_job(
    app: Flask, clock: Clock
) -> None:
    broker = broker_of(app)
    _, client = token(app, Scope.CLIENT, "node1")
    revoked_id, revoked = token(app, Scope.SITE, "s")
    _, valid = token(app, Scope.SITE, "s")
    answers: dict[str, Any] = {}

    def poll(name: str, headers: dict[str, str]) -> None:
        answers[name] = app.test_client().post("/api/v1/agent/claim?wait=20",
                                               json={"agent_id": name}, headers=headers)

    threads = [threading.Thread(target=poll, args=("revoked", revoked))]
    threads[0].start()
    wait_until(lambda: broker.notifier.waiting() == 1, "one long poll to wait")
    threads.append(threading.Thread(target=poll, args=("valid", valid)))
    threads[1].start()
    wait_until(lambda: broker.notifier.waiting() == 2, "two long polls to wait")
    assert broker.store.revoke_token(revoked_id, clock.now)
    job_id = queued(app, client, "s")  # wakes the longest waiting claim: the revoked one
    for thread in threads:
        thread.join(10)
    # Both answered on the job's arrival, well inside their 20 s wait.
    assert [thread.is_alive() for thread in threads] == [False, False]
    assert answers["revoked"].status_code == 401
    assert "was revoked" in answers["revoked"].get_json()["error"]["message"]
    assert answers["valid"].status_code == 200
    assert answers["valid"].get_json()["job"]["job_id"] == job_id


def test_an_agent_hands_a_job_back_with_its_epoch(app: Flask) -> None:
    _, client = token(app, Scope.CLIENT, "node1")
    _, agent = token(app, Scope.SITE, "s")
    job_id = queued(app, client, "s")
    got = app.test_client().post("/api/v1/agent/claim", json={"agent_id": "a1"}, headers=agent)
    epoch = str(got.get_json()["lease"]["epoch"])
    url = f"/api/v1/agent/jobs/{job_id}/release"
    stale = app.test_client().post(url, json={}, headers={**agent, "Lease-Epoch": "9"})
    assert stale.status_code == 409 and stale.get_json()["error"]["code"] == "stale_epoch"
    back = app.test_client().post(url, json={}, headers={**agent, "Lease-Epoch": epoch})
    assert back.status_code == 200 and back.get_json()["state"] == "queued"
    assert job_doc(app, client, job_id)["agent_id"] is None


def test_a_long_poll_of_a_queued_job_answers_when_its_site_turns_absent(
    app: Flask, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = token(app, Scope.CLIENT, "node1")
    token(app, Scope.SITE, "s")
    job_id = queued(app, client, "s")
    version = job_doc(app, client, job_id)["version"]
    clock.now += 119.5  # the site turns absent in half a second
    waits: list[float] = []
    real = api_client.wait_for

    def recorded(keys: list[str], wait: float, check: Callable[[], object]) -> object:
        waits.append(wait)
        return real(keys, wait, check)

    monkeypatch.setattr(api_client, "wait_for", recorded)
    doc = app.test_client().get(f"/api/v1/jobs/{job_id}?version={version}&wait=20",
                                headers=client).json  # fmt: skip
    assert waits == [pytest.approx(0.5)]  # until the site turns absent, not the 20 s asked
    assert doc is not None and doc["version"] == version  # nothing changed but the time


def test_a_claim_answer_whose_write_fails_hands_the_job_back_at_once(app: Flask) -> None:
    from werkzeug.test import EnvironBuilder

    _, client = token(app, Scope.CLIENT, "node1")
    _, agent = token(app, Scope.SITE, "s")
    job_id = queued(app, client, "s")
    environ = EnvironBuilder("/api/v1/agent/claim", method="POST", json={"agent_id": "a1"},
                             headers=agent).get_environ()  # fmt: skip
    body = app.wsgi_app(environ, lambda status, headers: None)  # type: ignore[arg-type]
    pieces = iter(body)
    assert job_id.encode() in next(pieces)
    assert job_doc(app, client, job_id)["state"] == "claimed"
    body.close()  # type: ignore[attr-defined]  # the server's write of that piece failed
    doc = job_doc(app, client, job_id)
    assert doc["state"] == "queued" and doc["agent_id"] is None
    again = app.test_client().post("/api/v1/agent/claim", json={"agent_id": "a2"}, headers=agent)
    assert again.get_json()["job"]["job_id"] == job_id and again.get_json()["lease"]["epoch"] == 2
