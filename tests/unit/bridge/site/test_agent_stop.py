"""A stopping agent (SIGTERM/SIGINT) ends its claim's long poll first and hands a job whose
claim answered as the stop began back to the broker at once, never starting it.

The broker is a fake ``AgentApi`` here; tests/integration/test_pull_handover.py stops real
agent processes in front of a real broker.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.core.errors import BrokerUnavailable, ConfigError
from bridge.site import agent as agent_module
from bridge.site.agent import Agent
from bridge.site.agent_api import Claimed, Lease
from bridge.site.config import load_site_config
from tests.support.site_toml import write_site_toml


class FakeApi:
    """Records the agent's calls; ``on_claim`` runs inside the claim (as a signal would)."""

    def __init__(self, on_claim: Callable[[], Claimed], release_error: Exception | None = None
                 ) -> None:  # fmt: skip
        self.on_claim = on_claim
        self.release_error = release_error
        self.claims = 0
        self.commands: list[list[str] | None] = []
        self.released: list[Lease] = []
        self.closed = False

    def claim(self, wait: float, commands: list[str] | None = None) -> Claimed | None:
        self.claims += 1
        self.commands.append(commands)
        return self.on_claim()

    def release(self, lease: Lease) -> None:
        self.released.append(lease)
        if self.release_error is not None:
            raise self.release_error

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    work = tmp_path / "work"
    work.mkdir()
    config = write_site_toml(
        tmp_path / "site.toml",
        site={"name": "s", "work_base": work, "log_file": tmp_path / "site.log"},
        agent={"url": "https://broker.example.org", "token_file": tmp_path / "token",
               "agent_id": "a1"},
        commands={"x": {"program": "/bin/true"}},
    )  # fmt: skip
    site = load_site_config(str(config))
    assert site.agent is not None
    return Agent(site, site.agent)


def serve_with(agent: Agent, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> list[Claimed]:
    """Serve against ``api`` until the agent stops; the claims it started."""
    started: list[Claimed] = []
    monkeypatch.setattr(agent_module, "AgentApi", lambda config: api)
    monkeypatch.setattr(agent, "start", started.append)
    assert agent.serve() == 0
    return started


def claimed() -> Claimed:
    job_id = str(uuid.uuid4())
    return Claimed({"job_id": job_id, "command": "x"}, Lease(job_id, 3, 60.0), reattach=False)


def test_a_claim_that_answered_as_the_stop_began_is_handed_back(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = claimed()

    def answer_then_stop() -> Claimed:
        agent.stop()  # the signal came while the answer was on its way
        return job

    api = FakeApi(answer_then_stop)
    assert serve_with(agent, api, monkeypatch) == []
    assert api.released == [job.lease] and api.claims == 1 and api.closed
    # The claim named what this site runs, so the broker handed it a job of its own.
    assert api.commands == [["mint-bridge-probe", "x"]]


def test_a_signal_during_the_long_poll_ends_it_and_claims_no_more(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def signal_arrives() -> Claimed:
        agent.on_signal(signal.SIGTERM, None)  # raises out of the poll, as in the real handler
        raise AssertionError("the long poll went on after the signal")

    api = FakeApi(signal_arrives)
    assert serve_with(agent, api, monkeypatch) == []
    assert api.claims == 1 and api.released == [] and api.closed


def test_a_hand_back_the_broker_refuses_is_left_to_the_lease(
    agent: Agent, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job = claimed()

    def answer_then_stop() -> Claimed:
        agent.stop()
        return job

    api = FakeApi(answer_then_stop, BrokerUnavailable("down"))
    assert serve_with(agent, api, monkeypatch) == []
    assert api.released == [job.lease]
    assert "could not hand it back" in caplog.text


def test_an_agent_whose_site_offers_no_command_stops_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_site_toml(
        tmp_path / "site.toml",
        site={"name": "s", "work_base": tmp_path, "allow_probe": False},
        agent={"url": "https://broker.example.org", "token_file": tmp_path / "token",
               "agent_id": "a1"},
        commands={},
    )  # fmt: skip
    assert agent_module.run_agent(str(config), configure_logging=False) == ConfigError.exit_code
    assert capsys.readouterr().err == (
        f"mint-bridge agent: error: {config}: this site offers no command, so its agent could "
        "take no job; define a [commands.NAME] table or set [site] allow_probe = true\n"
    )
