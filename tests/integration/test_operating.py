"""Operating a real broker (gunicorn, TLS): JSON logs of the broker and the agent, /metrics
with an operator token, and no token in any log line after a whole job ran through it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.broker import BrokerFactory, BrokerProcess, start_broker
from tests.support.pull import (
    Agent,
    bridge_config,
    make_site,
    run_job,
    wait_until,
)

SITE = "ops-site"


@pytest.fixture(scope="module")
def json_broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory("json-broker", extra='[logging]\nformat = "json"\n')


def start_json_agent(config: Path) -> Agent:
    log = config.with_suffix(".agent.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "agent", "--config", str(config),
             "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    return Agent(proc, log)


@pytest.fixture(scope="module")
def agent(json_broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    site = make_site(json_broker, tmp_path_factory.mktemp("ops") / "site", SITE)
    running = start_json_agent(site.config("ops-agent"))
    yield running
    assert running.stop() == 0, running.text()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(broker: BrokerProcess, token: str) -> Samples:
    answer = requests.get(f"{broker.url}/metrics", headers={"Authorization": f"Bearer {token}"},
                          verify=str(broker.ca_bundle), timeout=10)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def test_a_job_through_a_json_logging_broker_leaves_no_token_in_any_log(
    json_broker: BrokerProcess, agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_token = json_broker.token("client", "ops-node")
    operator = json_broker.token("operator", "prometheus")
    token_file = tmp_path / "client.token"
    token_file.write_text(client_token + "\n")
    token_file.chmod(0o600)
    bridge = bridge_config(tmp_path / "bridge.toml", json_broker.url, json_broker.ca_bundle,
                           token_file, [SITE])  # fmt: skip
    job_logs = tmp_path / "job-logs"
    monkeypatch.setenv("MINT_BRIDGE_LOG_DIR", str(job_logs))
    module = tmp_path / "module"
    module.mkdir()
    (module / "in.txt").write_text("hello\n")
    job_id = str(uuid.uuid4())
    # The agent must have polled once, else the broker would only note that none is online.
    wait_until(lambda: "ops-agent" in agent.text() or time.sleep(0.2), "the agent to start", 30)
    code, _, err = run_job(bridge, "--site", SITE, "--command", "checksum", "--job-id", job_id,
                           "-i", "in.txt", "-o", "out", cwd=module)  # fmt: skip
    assert code == 0, err
    assert (module / "out" / "sums.txt").exists()

    samples = scrape(json_broker, operator)
    site = (("site", SITE),)
    assert samples[("mint_bridge_broker_jobs_created_total", site)] == 1
    assert samples[("mint_bridge_broker_jobs_claimed_total", site)] >= 1
    completed = (("outcome", "completed"), ("site", SITE), ("state", "finished"))
    assert samples[("mint_bridge_broker_jobs_completed_total", completed)] == 1
    assert samples[("mint_bridge_broker_jobs", (("site", SITE), ("state", "finished")))] == 1
    assert samples[("mint_bridge_broker_agents_online", site)] == 1
    assert samples[("mint_bridge_broker_upload_bytes_total", (("file", "input"),))] >= 6
    assert samples[("mint_bridge_broker_download_bytes_total", (("file", "result"),))] > 0

    secrets = {name: text.rsplit("_", 1)[-1] for name, text in json_broker.tokens.items()}
    assert len(secrets) >= 3  # the client's, the site's (its agent's) and the operator's
    logs = [json_broker.log_path, json_broker.access_log, agent.log, *job_logs.iterdir()]
    about_job = 0
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            for name, secret in secrets.items():
                assert secret not in line, f"{name} token in {path.name}: {line}"
    for path in (json_broker.log_path, agent.log):
        for line in path.read_text(errors="replace").splitlines():
            record = json.loads(line)  # every line is one JSON object
            assert {"time", "level", "logger", "message"} <= set(record)
            if job_id in record["message"]:
                assert record["job_id"] == job_id
                about_job += 1
    assert about_job >= 2  # the broker's created/claimed lines, the agent's own


def test_an_operator_token_reads_metrics_and_nothing_else(json_broker: BrokerProcess) -> None:
    operator = json_broker.token("operator", "prometheus")
    headers = {"Authorization": f"Bearer {operator}"}
    verify = str(json_broker.ca_bundle)
    for path in ("/api/v1/jobs", "/api/v1/admin/jobs"):
        answer = requests.get(f"{json_broker.url}{path}", headers=headers, verify=verify,
                              timeout=10)  # fmt: skip
        assert answer.status_code == 403
    assert requests.get(f"{json_broker.url}/metrics", verify=verify, timeout=10).status_code == 401
    version = next(k for k in scrape(json_broker, operator)
                   if k[0] == "mint_bridge_broker_build_info")  # fmt: skip
    assert version[1][0][0] == "version"


def test_under_systemd_the_broker_writes_journal_lines(tmp_path: Path) -> None:
    """With JOURNAL_STREAM naming its stderr, every line (gunicorn's and ours) starts with a
    syslog priority and carries no timestamp: journald stamps lines itself."""
    broker = start_broker(tmp_path / "journal-broker", start=False)
    stderr = tmp_path / "stderr.log"
    with open(stderr, "wb") as out:
        stream = os.fstat(out.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{stream.st_dev}:{stream.st_ino}"}
        broker.proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "--config", str(broker.config_path)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        broker._wait_ready(30)
        client = broker.token("client", "journal-node")
        broker.token("site", "journal-site")
        job_id = str(uuid.uuid4())
        answer = requests.post(f"{broker.url}/api/v1/jobs", json={
            "job_id": job_id, "site": "journal-site", "command": "x", "inputs": []},
            headers={"Authorization": f"Bearer {client}"}, verify=str(broker.ca_bundle),
            timeout=10)  # fmt: skip
        assert answer.status_code == 201, answer.text
    finally:
        broker.stop()
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    assert any(line.startswith("<6>") and f"{job_id}: created by client" in line
               for line in lines), lines  # fmt: skip
    assert any(line.startswith("<6>") and "Listening at" in line for line in lines), lines
    assert all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert not [line for line in lines if re.search(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d", line)]
