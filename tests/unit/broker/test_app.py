"""The app in-process (Flask's test client): error shapes, limits, housekeeping with a fake clock.

The real server (gunicorn, TLS) is exercised in tests/integration/test_broker_api.py.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from broker.app import create_app
from broker.auth import new_token
from broker.config import BrokerConfig
from broker.housekeeping import run_once
from broker.runtime import EXTENSION, Broker
from broker.store import Scope


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Flask:
    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1", max_json_size=1000,
                          queue_ttl=3600, retention=86400)  # fmt: skip
    return create_app(config, housekeeping=False, clock=clock)


def broker_of(app: Flask) -> Broker:
    broker = app.extensions[EXTENSION]
    assert isinstance(broker, Broker)
    return broker


def auth(app: Flask, scope: Scope, subject: str) -> dict[str, str]:
    token, record = new_token(scope, subject, 0.0)
    broker_of(app).store.create_token(record)
    return {"Authorization": f"Bearer {token}"}


def error(response: Any) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def test_unknown_paths_and_methods_answer_in_the_contracts_json(app: Flask) -> None:
    client: FlaskClient = app.test_client()
    assert error(client.get("/nope")) == (404, "not_found")
    assert error(client.delete("/api/v1/health")) == (405, "method_not_allowed")
    assert client.get("/api/v1/health").get_json()["status"] == "ok"
    assert client.get("/api/v1/openapi.json").get_json()["openapi"].startswith("3.")


def test_a_json_body_over_the_limit_is_413_with_the_limit(app: Flask) -> None:
    headers = auth(app, Scope.CLIENT, "c")
    response = app.test_client().post("/api/v1/jobs", data=b"{" + b" " * 2000 + b"}",
                                      headers=headers)  # fmt: skip
    assert error(response) == (413, "too_large")
    assert "1000" in response.get_json()["error"]["message"]


def test_tokens_are_only_read_from_the_authorization_header(app: Flask) -> None:
    token = auth(app, Scope.CLIENT, "c")["Authorization"].split()[1]
    client = app.test_client()
    assert error(client.get(f"/api/v1/jobs?token={token}")) == (400, "bad_request")
    assert error(client.get("/api/v1/jobs", headers={"X-Token": token})) == (401, "unauthorized")
    response = client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_a_non_uuid_job_id_is_simply_not_found(app: Flask) -> None:
    headers = auth(app, Scope.CLIENT, "c")
    assert error(app.test_client().get("/api/v1/jobs/..", headers=headers)) == (404, "not_found")


def test_retention_deletes_old_jobs_with_their_files(app: Flask, clock: Clock) -> None:
    broker, client = broker_of(app), app.test_client()
    headers = auth(app, Scope.CLIENT, "c")
    auth(app, Scope.SITE, "s")  # the broker serves site s: it takes jobs for it
    data = b"payload"
    digest = hashlib.sha256(data).hexdigest()
    body = {"job_id": str(uuid.uuid4()), "site": "s", "command": "x",
            "inputs": [{"name": "a", "size": len(data), "sha256": digest}]}
    job_id = client.post("/api/v1/jobs", json=body, headers=headers).get_json()["job_id"]
    assert client.patch(f"/api/v1/jobs/{job_id}/inputs/a", data=data,
                        headers={**headers, "Upload-Offset": "0"}).status_code == 204  # fmt: skip
    assert client.post(f"/api/v1/jobs/{job_id}/submit", headers=headers).status_code == 200
    job_dir = Path(broker.files.root) / job_id
    assert (job_dir / "inputs" / "a").read_bytes() == data

    clock.now += 3601  # nobody claimed it within the queue TTL
    run_once(broker, clock.now)
    doc = client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()
    assert doc["state"] == "expired" and "within 1h" in doc["outcome"]["reason"]
    assert job_dir.exists()  # kept for the retention period

    clock.now += 86401
    run_once(broker, clock.now)
    assert error(client.get(f"/api/v1/jobs/{job_id}", headers=headers)) == (404, "not_found")
    assert not job_dir.exists()


def test_a_range_past_the_end_is_416_with_the_size(app: Flask) -> None:
    broker, client = broker_of(app), app.test_client()
    headers = auth(app, Scope.CLIENT, "c")
    agent = auth(app, Scope.SITE, "s")
    data = b"0123456789"
    body = {"site": "s", "command": "x", "inputs": [
        {"name": "a", "size": 10, "sha256": hashlib.sha256(data).hexdigest()}]}
    job_id = client.post("/api/v1/jobs", json=body, headers=headers).get_json()["job_id"]
    client.patch(f"/api/v1/jobs/{job_id}/inputs/a", data=data,
                 headers={**headers, "Upload-Offset": "0"})  # fmt: skip
    client.post(f"/api/v1/jobs/{job_id}/submit", headers=headers)
    assert broker.store.claim("s", "a1", 60, broker.clock()) is not None
    url = f"/api/v1/agent/jobs/{job_id}/inputs/a"
    part = client.get(url, headers={**agent, "Range": "bytes=4-"})
    assert part.status_code == 206 and part.data == b"456789"
    past = client.get(url, headers={**agent, "Range": "bytes=20-"})
    assert error(past) == (416, "range_not_satisfiable")
    assert past.headers["Content-Range"] == "bytes */10"
