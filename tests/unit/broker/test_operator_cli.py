"""``mint-bridge broker jobs list|show|cancel`` and ``broker sites`` over a real SQLite store."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.auth import new_token
from broker.cli import cli
from broker.config import load_config
from broker.store import InputSpec, NewJob, ResultRecord, Scope, State
from broker.store.sqlite import SQLiteStore


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "broker.toml"
    path.write_text('[server]\nhost = "127.0.0.1"\ntls = false\n[storage]\ndata_dir = "data"\n')
    return str(path)


def open_store(config: str) -> SQLiteStore:
    broker = load_config(config)
    Path(broker.data_dir).mkdir(mode=0o700, exist_ok=True)
    return SQLiteStore(broker.database)


def add_job(store: SQLiteStore, site: str, now: float, data: bytes = b"") -> str:
    job_id = str(uuid.uuid4())
    inputs = (InputSpec("in.txt", len(data), hashlib.sha256(data).hexdigest()),) if data else ()
    store.create_job(NewJob(job_id, "ssh-node01", site, "fatigue", inputs=inputs), now)
    if data:
        store.set_input_received(job_id, "in.txt", 0, len(data), now)
    store.submit(job_id, now)
    return job_id


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_jobs_list_filters_and_prints_a_table_or_json(config: str) -> None:
    store = open_store(config)
    now = time.time()
    old = add_job(store, "site-a", now - 3 * 3600)
    recent = [add_job(store, "site-a", now - 60 + i) for i in range(3)]
    other = add_job(store, "site-b", now - 30)
    store.cancel(other, now)
    store.close()

    code, out = run("jobs", "list", "--config", config)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["JOB", "SITE", "CLIENT", "COMMAND", "STATE"]
    assert len(lines) == 6 and other in lines[1] and "cancelled" in lines[1]

    code, out = run("jobs", "list", "--site", "site-a", "--since", "1h", "--json",
                    "--config", config)  # fmt: skip
    assert code == 0
    rows = json.loads(out)["jobs"]
    assert [r["job_id"] for r in rows] == recent[::-1]
    assert all(r["state"] == "queued" and r["exit_code"] is None for r in rows)

    code, out = run("jobs", "list", "--state", "queued", "--limit", "1", "--json",
                    "--config", config)  # fmt: skip
    assert [r["job_id"] for r in json.loads(out)["jobs"]] == [recent[-1]]
    assert old not in out

    code, out = run("jobs", "list", "--since", "yesterday", "--config", config)
    assert code != 0 and "--since" in out


def test_jobs_show_has_times_lease_agent_files_and_exit(config: str) -> None:
    store = open_store(config)
    now = time.time()
    data = b"0123456789"
    job_id = add_job(store, "site-a", now, data)
    claim = store.claim("site-a", "agent-1", 60, now + 5)
    assert claim is not None
    store.mark_running(job_id, claim.epoch, "4242", 60, now + 6)
    digest = hashlib.sha256(b"out").hexdigest()
    store.set_result_upload(job_id, claim.epoch, ResultRecord("out.csv", 3, digest, 3), 0, now + 7)
    outcome = {"state": "failed", "exit_code": 3, "reason": "solver diverged"}
    store.complete(job_id, claim.epoch, outcome, [ResultRecord("out.csv", 3, digest, 3)], [],
                   now + 8)  # fmt: skip
    store.close()

    code, out = run("jobs", "show", job_id, "--json", "--config", config)
    assert code == 0
    detail = json.loads(out)
    assert detail["state"] == "finished" and detail["agent_id"] == "agent-1"
    assert detail["exit_code"] == 3 and detail["reason"] == "solver diverged"
    assert detail["native_id"] == "4242" and detail["lease"]["epoch"] == claim.epoch
    assert [(e["event"], e["at"], e["agent_id"]) for e in detail["timeline"]] == [
        ("created", now, None), ("queued", now, None), ("claimed", now + 5, "agent-1"),
        ("running", now + 6, "agent-1"), ("finished", now + 8, "agent-1")]  # fmt: skip
    assert detail["inputs"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert detail["results"][0] == {"name": "out.csv", "size": 3, "sha256": digest,
                                    "received": 3, "listed": True}  # fmt: skip

    code, out = run("jobs", "show", job_id, "--config", config)
    assert code == 0
    assert "solver diverged" in out and "agent-1" in out and digest in out and "out.csv" in out

    assert run("jobs", "show", str(uuid.uuid4()), "--config", config)[0] == 1
    assert run("jobs", "show", "not-a-job", "--config", config)[0] != 0


def test_jobs_cancel_ends_a_queued_job_and_flags_a_held_one(config: str) -> None:
    store = open_store(config)
    now = time.time()
    queued = add_job(store, "site-a", now - 10)
    held = add_job(store, "site-a", now - 20)
    assert store.claim("site-a", "agent-1", 60, now) is not None  # the oldest: ``held``
    store.close()

    code, out = run("jobs", "cancel", queued, "--config", config)
    assert code == 0 and "cancelled" in out
    code, out = run("jobs", "cancel", held, "--config", config)
    assert code == 0 and "cancel requested" in out
    store = open_store(config)
    first, second = store.get_job(queued), store.get_job(held)
    store.close()
    assert first is not None and first.state is State.CANCELLED
    assert second is not None and second.cancel_requested and second.state is State.CLAIMED
    assert run("jobs", "cancel", str(uuid.uuid4()), "--config", config)[0] == 1


def test_sites_shows_agents_queues_and_unregistered_sites(config: str) -> None:
    store = open_store(config)
    now = time.time()
    for site in ("site-a", "site-b"):
        store.create_token(new_token(Scope.SITE, site, now)[1])
    add_job(store, "site-a", now - 600)
    add_job(store, "site-a", now - 5)
    add_job(store, "site-b", now - 700)
    assert store.claim("site-b", "agent-b", 60, now - 1) is not None
    store.close()

    code, out = run("sites", "--json", "--config", config)
    assert code == 0
    sites = {s["site"]: s for s in json.loads(out)["sites"]}
    assert set(sites) == {"site-a", "site-b"}
    assert sites["site-a"]["queued"] == 2 and sites["site-a"]["agents_online"] == 0
    assert sites["site-a"]["oldest_wait"] == pytest.approx(600, abs=5)
    assert sites["site-b"]["agents_online"] == 1 and sites["site-b"]["claimed"] == 1
    assert sites["site-b"]["agents"][0]["agent_id"] == "agent-b"

    code, out = run("sites", "--config", config)
    assert code == 0
    header, row_a, row_b = out.splitlines()
    assert header.split()[:2] == ["SITE", "AGENTS"]
    assert row_a.split()[:2] == ["site-a", "0"] and "10 min" in row_a
    assert row_b.split()[:2] == ["site-b", "1"]


def test_an_operator_token_is_created_like_the_others(config: str) -> None:
    code, out = run("token", "create", "--operator", "prometheus", "--config", config)
    assert code == 0 and out.startswith("mbt_")
    code, out = run("token", "list", "--config", config)
    assert "operator" in out and "prometheus" in out and out.rstrip().endswith("never used")
    assert run("token", "create", "--operator", "bad name", "--config", config)[0] != 0
