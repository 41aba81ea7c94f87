"""How the bridge reads a pull job's final document, and how the agent refuses a bad config."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from bridge.client.broker_job import BrokerJobRun
from bridge.client.node_config import BrokerSite
from bridge.core.errors import (
    BridgeError,
    CommandNotAllowed,
    ExitCode,
    InputRejected,
    JobFailedAtSite,
    ParameterInvalid,
    SiteError,
)
from bridge.core.job import JobRequest, JobState
from bridge.site.agent import run_agent


def job_run(tmp_path: Path) -> BrokerJobRun:
    site = BrokerSite("s", "https://broker.example.org", str(tmp_path / "token"))
    request = JobRequest(str(uuid.uuid4()), "solve")
    return BrokerJobRun(site, request, [], str(tmp_path / "out"), None, None)  # type: ignore[arg-type]


def doc(state: str, outcome: dict[str, Any] | None) -> dict[str, Any]:
    return {"state": state, "outcome": outcome, "results": [], "skipped": []}


def test_finished_job_gives_the_solver_exit_code(tmp_path: Path) -> None:
    outcome = job_run(tmp_path)._outcome(
        doc("finished", {"state": "failed", "exit_code": 9, "signal": None, "reason": "x"})
    )
    assert outcome.state is JobState.FAILED
    assert outcome.bridge_exit_code() == 9


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("CommandNotAllowed", CommandNotAllowed, ExitCode.COMMAND_NOT_ALLOWED),
        ("ParameterInvalid", ParameterInvalid, ExitCode.PARAMETER_INVALID),
        ("InputRejected", InputRejected, ExitCode.PARAMETER_INVALID),
        ("SiteError", SiteError, ExitCode.SITE_ERROR),
        ("SomethingElse", SiteError, ExitCode.SITE_ERROR),  # never trust the peer's class name
    ],
)
def test_rejected_job_raises_the_sites_error(
    tmp_path: Path, kind: str, error: type[BridgeError], code: ExitCode
) -> None:
    rejected = {"state": "rejected", "reason": "site s has no command 'x'", "error_kind": kind}
    with pytest.raises(error) as caught:
        job_run(tmp_path)._outcome(doc("finished", rejected))
    assert type(caught.value) is error
    assert caught.value.exit_code == code
    assert caught.value.message == "site s has no command 'x'"


def test_expired_job_says_no_agent_took_it(tmp_path: Path) -> None:
    reason = "no agent of site s claimed it within 1d"
    with pytest.raises(JobFailedAtSite) as caught:
        job_run(tmp_path)._outcome(doc("expired", {"state": "lost", "reason": reason}))
    assert caught.value.exit_code == ExitCode.SITE_UNREACHABLE
    assert reason in caught.value.message and "agent is running" in caught.value.message


def test_cancelled_before_any_agent_took_it(tmp_path: Path) -> None:
    outcome = job_run(tmp_path)._outcome(doc("cancelled", None))
    assert outcome.bridge_exit_code() == ExitCode.CANCELLED_AT_SITE


# --- the agent's start ---------------------------------------------------------------------


def site_toml(tmp_path: Path, agent: str) -> str:
    path = tmp_path / "site.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [site]
            name = "s"
            work_base = "{tmp_path / "work"}"
            log_file = "{tmp_path / "site.log"}"

            [commands.echo]
            program = "/bin/echo"
            """
        )
        + agent
    )
    return str(path)


def test_agent_needs_an_agent_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_agent(site_toml(tmp_path, ""), configure_logging=False) == ExitCode.CONFIG_INVALID
    assert "no [agent] table" in capsys.readouterr().err


def test_agent_refuses_a_token_file_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "agent.token"
    token.write_text("mbt_0123456789ab_" + "x" * 43 + "\n")
    token.chmod(0o644)
    config = site_toml(
        tmp_path, '[agent]\nurl = "https://b.example.org"\ntoken_file = "agent.token"\n'
    )
    assert run_agent(config, configure_logging=False) == ExitCode.CONFIG_INVALID
    err = capsys.readouterr().err
    assert f"chmod 600 {token}" in err
    assert "x" * 43 not in err
