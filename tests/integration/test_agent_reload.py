"""SIGHUP makes a real agent re-read its site config without dropping the job it runs: the
job started before the signal finishes with exit 0 and runs once; a command added to the file
is served right after; a broken file is refused and the agent goes on with the old config."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import BrokerFactory, BrokerProcess
from tests.support.pull import ClientApi, make_site, start_agent, wait_until


@pytest.fixture(scope="module")
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory("reload")


def submit(api: ClientApi, site: str, command: str, **params: Any) -> str:
    job_id = str(uuid.uuid4())
    body = {"job_id": job_id, "site": site, "command": command, "params": params}
    api.http.post(api.base, json=body, timeout=30).raise_for_status()
    api.http.post(f"{api.base}/{job_id}/submit", timeout=30).raise_for_status()
    return job_id


def test_sighup_rereads_the_config_and_the_running_job_goes_on(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    site = make_site(broker, tmp_path / "site", "pull-reload")
    config = site.config("reload-agent")
    token = tmp_path / "client.token"
    token.write_text(broker.token("client", "node-reload") + "\n")
    token.chmod(0o600)
    api = ClientApi(broker, token)
    agent = start_agent(config)
    try:
        running = submit(api, site.name, "count", seconds=3)
        wait_until(lambda: site.counted(), "the first job to start", 60)
        original = config.read_text()
        # The admin adds a command (a copy of count under a new name) and sends SIGHUP.
        program = Path(__file__).parent / "programs" / "count_job.py"
        added = original + (
            f'\n[commands.count2]\nprogram = "{program}"\nargs = ["{site.counter}", "0"]\n'
        )
        config.write_text(added)
        agent.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "config re-read" in agent.text(), "the agent to re-read its config")
        doc = api.final(running, limit=60)
        assert doc["state"] == "finished", doc
        assert isinstance(doc["outcome"], dict) and doc["outcome"]["exit_code"] == 0, doc
        assert [job for job, _ in site.counted()] == [running]  # ran once, not restarted
        assert "1 running jobs go on" in agent.text()
        # The new command is served by the same agent process.
        new = submit(api, site.name, "count2")
        doc = api.final(new, limit=60)
        assert isinstance(doc["outcome"], dict) and doc["outcome"]["exit_code"] == 0, doc
        # A broken file is refused; the agent keeps its config and serves on.
        config.write_text("[site\n")
        agent.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "still running with the previous config" in agent.text(),
                   "the agent to refuse the broken config")  # fmt: skip
        assert agent.proc.poll() is None
        last = submit(api, site.name, "count2")
        doc = api.final(last, limit=60)
        assert isinstance(doc["outcome"], dict) and doc["outcome"]["exit_code"] == 0, doc
    finally:
        config.write_text(original if "original" in locals() else config.read_text())
        assert agent.stop() == 0, agent.text()
