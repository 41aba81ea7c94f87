"""``GET /metrics``: who may scrape, and what the figures say after real requests.

The exposition is parsed with prometheus_client's own parser, so a format error fails here.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from bridge import __version__
from broker.app import create_app
from broker.config import BrokerConfig
from broker.store import Scope
from tests.unit.broker.test_app import Clock, auth, error

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Flask:
    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1",
                          agent_absent_after=120)  # fmt: skip
    return create_app(config, housekeeping=False, clock=clock)


def scrape(client: FlaskClient, headers: dict[str, str]) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        assert family.name.startswith("mint_bridge_broker_")
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(f"mint_bridge_broker_{name}", tuple(sorted(labels.items())))]


def create(client: FlaskClient, headers: dict[str, str], site: str, data: bytes = b"") -> str:
    inputs = [{"name": "a", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
    body = {"job_id": str(uuid.uuid4()), "site": site, "command": "x", "inputs": inputs}
    response = client.post("/api/v1/jobs", json=body, headers=headers)
    assert response.status_code == 201
    job_id = response.get_json()["job_id"]
    if data:
        client.patch(f"/api/v1/jobs/{job_id}/inputs/a", data=data,
                     headers={**headers, "Upload-Offset": "0"})  # fmt: skip
    assert client.post(f"/api/v1/jobs/{job_id}/submit", headers=headers).status_code == 200
    return job_id


def test_only_admin_and_operator_tokens_may_scrape(app: Flask) -> None:
    client = app.test_client()
    assert error(client.get("/metrics")) == (401, "unauthorized")
    assert error(client.get("/metrics", headers=auth(app, Scope.CLIENT, "c")))[0] == 403
    assert error(client.get("/metrics", headers=auth(app, Scope.SITE, "s")))[0] == 403
    scrape(client, auth(app, Scope.ADMIN, "admin"))
    samples = scrape(client, auth(app, Scope.OPERATOR, "prometheus"))
    assert value(samples, "build_info", version=__version__) == 1
    assert value(samples, "start_time_seconds") == 1_000_000.0


def test_figures_follow_creates_claims_and_completions(app: Flask, clock: Clock) -> None:
    client = app.test_client()
    user = auth(app, Scope.CLIENT, "c")
    agent_a = auth(app, Scope.SITE, "site-a")
    auth(app, Scope.SITE, "site-b")
    operator = auth(app, Scope.OPERATOR, "prometheus")
    first = create(client, user, "site-a", b"0123456789")
    clock.now += 30
    for _ in range(2):
        create(client, user, "site-a")
    create(client, user, "site-b")
    clock.now += 10

    samples = scrape(client, operator)
    assert value(samples, "jobs", site="site-a", state="queued") == 3
    assert value(samples, "jobs", site="site-b", state="queued") == 1
    assert value(samples, "queue_depth", site="site-a") == 3
    assert value(samples, "oldest_queued_age_seconds", site="site-a") == 40
    assert value(samples, "jobs_created_total", site="site-a") == 3
    assert value(samples, "upload_bytes_total", file="input") == 10
    assert value(samples, "http_requests_total", route="/api/v1/jobs", method="POST",
                 status="201") == 4  # fmt: skip
    assert value(samples, "http_request_duration_seconds_count", route="/api/v1/jobs",
                 method="POST") == 4  # fmt: skip
    # The broker just started: an agent that never polled is not yet missed, but none is seen.
    assert value(samples, "agents_online", site="site-a") == 0
    assert value(samples, "long_polls_in_flight") == 0

    claim = client.post("/api/v1/agent/claim", json={"agent_id": "agent-1"}, headers=agent_a)
    assert claim.status_code == 200
    job = claim.get_json()["job"]
    assert job["job_id"] == first
    epoch = str(claim.get_json()["lease"]["epoch"])
    lease = {**agent_a, "Lease-Epoch": epoch}
    got = client.get(f"/api/v1/agent/jobs/{first}/inputs/a", headers=lease)
    assert got.data == b"0123456789"
    done = client.post(f"/api/v1/agent/jobs/{first}/complete", headers=lease,
                       json={"outcome": {"state": "completed", "exit_code": 0}})  # fmt: skip
    assert done.status_code == 200, done.data
    client.post(f"/api/v1/agent/jobs/{first}/complete", headers=lease,
                json={"outcome": {"state": "completed", "exit_code": 0}})  # fmt: skip

    samples = scrape(client, operator)
    assert value(samples, "queue_depth", site="site-a") == 2
    assert value(samples, "jobs", site="site-a", state="queued") == 2
    assert value(samples, "jobs", site="site-a", state="finished") == 1
    assert value(samples, "jobs_claimed_total", site="site-a") == 1
    # A repeated complete is answered again but counted once.
    assert value(samples, "jobs_completed_total", site="site-a", state="finished",
                 outcome="completed") == 1  # fmt: skip
    assert value(samples, "agents_online", site="site-a") == 1
    assert value(samples, "agents_online", site="site-b") == 0
    assert value(samples, "agent_last_seen_timestamp_seconds", site="site-a") == clock.now
    assert value(samples, "download_bytes_total", file="input") == 10
    assert value(samples, "store_size_bytes") > 0
    assert value(samples, "http_requests_total", route="/metrics", method="GET",
                 status="200") == 1  # fmt: skip

    clock.now += 121  # past agent_absent_after
    assert value(scrape(client, operator), "agents_online", site="site-a") == 0


def test_an_unknown_path_is_counted_under_one_label(app: Flask) -> None:
    client = app.test_client()
    for path in ("/nope", "/other", "/api/v1/jobs/x/y/z"):
        client.get(path)
    samples = scrape(client, auth(app, Scope.OPERATOR, "p"))
    assert value(samples, "http_requests_total", route="unmatched", method="GET",
                 status="404") == 3  # fmt: skip


def test_refused_requests_are_counted_by_reason(app: Flask, clock: Clock) -> None:
    client = app.test_client()
    store = app.extensions["mint_broker"].store
    revoked = auth(app, Scope.CLIENT, "gone")
    store.revoke_token(revoked["Authorization"].split("_")[1], clock.now)
    client.get("/api/v1/jobs")  # missing
    client.get("/api/v1/jobs", headers={"Authorization": "Basic dXNlcg=="})  # not_bearer
    client.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})  # malformed
    client.get("/api/v1/jobs", headers={"Authorization": "Bearer mbt_000000000000_" + "x" * 40})
    client.get("/api/v1/jobs", headers=revoked)
    client.get("/api/v1/jobs?access_token=abc")  # token_in_url
    client.get("/api/v1/jobs", headers=auth(app, Scope.SITE, "s1"))  # wrong_scope
    client.get("/metrics", headers=auth(app, Scope.CLIENT, "c1"))  # wrong_scope
    client.get("/api/v1/jobs", headers=auth(app, Scope.CLIENT, "fine"))  # not a failure
    samples = scrape(client, auth(app, Scope.OPERATOR, "p"))
    counted = {labels[0][1]: n for (name, labels), n in samples.items()
               if name == "mint_bridge_broker_auth_failures_total"}  # fmt: skip
    assert counted == {"missing": 1, "not_bearer": 1, "malformed": 1, "unknown": 1,
                       "revoked": 1, "token_in_url": 1, "wrong_scope": 2}  # fmt: skip


def test_lapsed_leases_and_expired_jobs_are_counted(app: Flask, clock: Clock) -> None:
    from broker.housekeeping import run_once
    from broker.metrics import of_app

    client = app.test_client()
    headers = auth(app, Scope.CLIENT, "c1")
    auth(app, Scope.SITE, "s1")
    create(client, headers, "s1")
    create(client, headers, "s1")
    broker = app.extensions["mint_broker"]
    ttl = broker.config.lease_ttl
    claims = [broker.store.claim("s1", "a1", ttl, clock.now) for _ in range(2)]
    assert claims[0] is not None and claims[1] is not None
    running = claims[1].job.job_id
    broker.store.mark_running(running, claims[1].epoch, None, ttl, clock.now)
    clock.now += ttl + 1
    run_once(broker, clock.now, of_app(app).expiries)
    clock.now += broker.config.queue_ttl + 1
    run_once(broker, clock.now, of_app(app).expiries)  # the requeued job now expires
    samples = scrape(client, auth(app, Scope.OPERATOR, "p"))
    assert value(samples, "lease_expiries_total", outcome="requeued") == 1
    assert value(samples, "lease_expiries_total", outcome="agent_lost") == 1
    assert value(samples, "jobs_expired_total") == 1


def test_dispatch_latency_and_job_duration_are_histograms(app: Flask, clock: Clock) -> None:
    client = app.test_client()
    user, agent = auth(app, Scope.CLIENT, "c"), auth(app, Scope.SITE, "site-a")
    job_id = create(client, user, "site-a")
    clock.now += 2
    claim = client.post("/api/v1/agent/claim", json={"agent_id": "a1"}, headers=agent)
    assert claim.get_json()["job"]["job_id"] == job_id
    lease = {**agent, "Lease-Epoch": str(claim.get_json()["lease"]["epoch"])}
    clock.now += 3
    for _ in range(2):  # a repeated "running" is not a second start
        answer = client.post(f"/api/v1/agent/jobs/{job_id}/lease", headers=lease,
                             json={"state": "running"})  # fmt: skip
        assert answer.get_json()["state"] == "running"
    clock.now += 10
    done = client.post(f"/api/v1/agent/jobs/{job_id}/complete", headers=lease,
                       json={"outcome": {"state": "failed", "exit_code": 2}})  # fmt: skip
    assert done.status_code == 200, done.data
    samples = scrape(client, auth(app, Scope.OPERATOR, "p"))
    for name, seconds, labels in (("dispatch_claim_seconds", 2, {"site": "site-a"}),
                                  ("dispatch_running_seconds", 5, {"site": "site-a"}),
                                  ("job_duration_seconds", 15,
                                   {"site": "site-a", "state": "finished"})):  # fmt: skip
        assert value(samples, f"{name}_count", **labels) == 1, name
        assert value(samples, f"{name}_sum", **labels) == seconds, name
        assert value(samples, f"{name}_bucket", **labels, le="1") == 0, name
        assert value(samples, f"{name}_bucket", **labels, le="30") == 1, name


def test_store_transactions_are_timed_by_operation(app: Flask, clock: Clock) -> None:
    client = app.test_client()
    user, agent = auth(app, Scope.CLIENT, "c"), auth(app, Scope.SITE, "site-a")
    operator = auth(app, Scope.OPERATOR, "p")
    before = scrape(client, operator)
    for _ in range(3):
        create(client, user, "site-a")
    claim = client.post("/api/v1/agent/claim", json={"agent_id": "a1"}, headers=agent)
    assert claim.status_code == 200, claim.data
    after = scrape(client, operator)

    def count(samples: Samples, operation: str, kind: str) -> float:
        key = ("mint_bridge_broker_store_transaction_seconds_count",
               (("kind", kind), ("operation", operation)))  # fmt: skip
        return samples.get(key, 0.0)

    assert count(after, "create_job", "write") - count(before, "create_job", "write") == 3
    assert count(after, "submit", "write") - count(before, "submit", "write") == 3
    assert count(after, "claim", "write") - count(before, "claim", "write") == 1
    assert count(after, "page_jobs", "write") == 0  # a read is never counted as a write
    labels = {"operation": "create_job", "kind": "write"}
    total = value(after, "store_transaction_seconds_count", **labels)
    assert value(after, "store_transaction_seconds_bucket", **labels, le="+Inf") == total
    assert 0 < value(after, "store_transaction_seconds_sum", **labels) < total * 10
    buckets = [v for (n, key), v in after.items()
               if n.endswith("store_transaction_seconds_bucket") and ("operation", "claim") in key]
    assert buckets == sorted(buckets), "buckets are cumulative"
