"""The end-to-end probe through a real broker (gunicorn, TLS) to a real agent process.

``mint-bridge health --probe`` of a broker site passes only when an agent of that site claims
the probe job and answers it like any job; with no agent it fails within the timeout, saying
no agent claimed it, and the probe job does not wait at the broker for a late agent.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import BrokerProcess
from tests.support.pull import (
    ClientApi,
    Site,
    bridge_config,
    make_site,
    start_agent,
)

STEPS = ("probe.connect", "probe.stage_in", "probe.run", "probe.stage_out", "probe.verify")


@pytest.fixture(scope="module")
def client_token(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("client") / "broker.token"
    path.write_text(broker.token("client", "probe-node") + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def served(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Site ``probe-served`` with a running agent."""
    site = make_site(broker, tmp_path_factory.mktemp("pull") / "served", "probe-served")
    agent = start_agent(site.config("probe-agent"))
    yield site
    assert agent.stop() == 0, agent.text()


@pytest.fixture(scope="module")
def config(
    broker: BrokerProcess, client_token: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("bridge") / "bridge.toml"
    return bridge_config(
        path, broker.url, broker.ca_bundle, client_token, ["probe-served", "probe-unserved"]
    )


def health(*args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args, "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == proc.returncode
    checks = {c["check"]: c for c in doc["checks"] if c["target"] != "bridge"}
    return proc.returncode, checks


def test_a_site_with_an_agent_answers_the_probe(served: Site, config: Path) -> None:
    code, checks = health(
        "health", "--config", str(config), "--site", "probe-served", "--probe", "--timeout", "30"
    )
    for step in STEPS:
        assert checks[step]["status"] == "ok", checks
    assert "came back unchanged (SHA-256 " in checks["probe.verify"]["message"]
    assert checks["probe.work_base"]["value"] == str(served.work_base)
    # The site's commands all run (testprog.py, count_job.py): nothing to warn about.
    assert not any(name.startswith("probe.program.") for name in checks)
    assert code == max(
        {"ok": 0, "warn": 1, "fail": 2, "unknown": 3}[c["status"]] for c in checks.values()
    )
    assert list(served.work_base.iterdir()) == [], "the probe's work dir must be removed"


def test_a_site_without_an_agent_fails_within_the_timeout(
    broker: BrokerProcess, client_token: Path, config: Path
) -> None:
    broker.token("site", "probe-unserved")  # a registered site whose agent is not running
    code, checks = health(
        "sites", "test", "probe-unserved", "--config", str(config), "--timeout", "10"
    )
    assert code == 2, checks
    failed = checks["probe.run"]
    assert failed["status"] == "fail"
    # The claim gets a share of the time the checks before it left.
    assert re.match(
        r"no agent of site probe-unserved claimed the probe job within [1-9] s; ", failed["message"]
    ), failed
    assert "systemctl enable --now mint-bridge-agent.service" in failed["fix"]
    # Within the timeout: the claim waited its share of the 10 s (the message above), and
    # the checks after it were never tried.
    for later in ("probe.stage_out", "probe.verify"):
        assert checks[later]["status"] == "unknown"
    # The unclaimed probe was cancelled: no agent that starts later finds it waiting.
    answer = ClientApi(broker, client_token).http.get(f"{broker.url}/api/v1/jobs", timeout=30)
    answer.raise_for_status()
    states = [job["state"] for job in answer.json()["jobs"] if job["site"] == "probe-unserved"]
    assert states == ["cancelled"], states


def test_a_site_the_broker_does_not_know_fails_at_once_naming_the_fix(
    broker: BrokerProcess, config: Path
) -> None:
    path = config.parent / "unknown.toml"
    path.write_text(config.read_text().replace("probe-unserved", "probe-nowhere"))
    code, checks = health("sites", "test", "probe-nowhere", "--config", str(path))
    assert code == 2, checks
    failed = checks["probe.connect"]
    assert failed["status"] == "fail", checks
    text = failed["message"] + " " + failed["fix"]
    assert "probe-nowhere" in text, failed
    assert "mint-bridge broker token create --site probe-nowhere" in text, failed
    # At once: nothing after the refused connect was tried, and no probe job was created.
    for later in ("probe.run", "probe.stage_out", "probe.verify"):
        assert checks[later]["status"] == "unknown", checks
