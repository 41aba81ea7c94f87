"""What ``mint-bridge run`` says while its pull job waits for an agent, and the reason it gives
when no agent ever took the job (``bridge.client.broker_wait``); and a site the broker does not
serve, refused at create, as a config error of the bridge node."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from bridge.client.broker_job import BrokerJobRun
from bridge.client.broker_wait import ClaimWatch
from bridge.client.node_config import BrokerSite
from bridge.core.errors import ConfigError, ExitCode, JobFailedAtSite, ProtocolError, TimedOut
from bridge.core.job import JobRequest

ABSENT = {"code": "no_agent_online", "agent_last_seen": None,
          "message": "no agent of site s has polled the broker for 5 min; the job stays queued "
                     "until one does (at most 1d, the broker's queue limit)"}  # fmt: skip
TIMEOUT = TimedOut("no result within the overall timeout of 30 s; the job was cancelled at "
                   "the site")


def doc(state: str, notice: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"state": state, "notice": notice}


def test_no_agent_online_is_said_once_with_our_timeout(caplog: pytest.LogCaptureFixture) -> None:
    watch = ClaimWatch("job-1", "s", 30)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            watch.note(doc("queued", ABSENT))
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"job-1: {ABSENT['message']}; mint-bridge run gives up after 30 s (--timeout)"]


def test_an_agent_that_is_back_is_said_too(caplog: pytest.LogCaptureFixture) -> None:
    watch = ClaimWatch("job-1", "s", None)
    with caplog.at_level(logging.WARNING):
        watch.note(doc("queued", ABSENT))
        watch.note(doc("claimed"))
        watch.note(doc("running"))
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"job-1: {ABSENT['message']}", "job-1: an agent of site s is online again"]


def test_our_timeout_while_no_agent_was_online_says_never_claimed() -> None:
    watch = ClaimWatch("job-1", "s", 30)
    watch.note(doc("queued", ABSENT))
    error = watch.timed_out(TIMEOUT)
    assert isinstance(error, JobFailedAtSite) and error.exit_code == ExitCode.SITE_UNREACHABLE
    assert error.message.startswith("never claimed: no agent of site s was online (no agent of")
    assert "cancelled at the broker after 30 s" in error.message
    assert "cancelled at the site" not in error.message


def test_our_timeout_while_the_sites_agents_were_busy_stays_a_timeout() -> None:
    watch = ClaimWatch("job-1", "s", 30)
    watch.note(doc("queued"))
    error = watch.timed_out(TIMEOUT)
    assert type(error) is TimedOut and error.exit_code == ExitCode.TIMED_OUT
    assert "no agent of site s claimed the job" in error.message
    assert "cancelled at the broker" in error.message


def test_our_timeout_once_an_agent_had_the_job_is_unchanged() -> None:
    watch = ClaimWatch("job-1", "s", 30)
    watch.note(doc("queued", ABSENT))
    watch.note(doc("running"))
    assert watch.timed_out(TIMEOUT) is TIMEOUT


def test_the_queue_limit_while_no_agent_was_online_says_never_claimed() -> None:
    watch = ClaimWatch("job-1", "s", None)
    watch.note(doc("queued", ABSENT))
    watch.note(doc("expired"))  # a final document carries no notice; the last one stands
    error = watch.expired("no agent of site s claimed it within 1d")
    assert error.exit_code == ExitCode.SITE_UNREACHABLE
    assert error.message.startswith("never claimed: no agent of site s was online")
    assert "queue limit" in error.message


def test_the_queue_limit_with_agents_online_keeps_the_brokers_reason() -> None:
    watch = ClaimWatch("job-1", "s", None)
    watch.note(doc("queued"))
    error = watch.expired("no agent of site s claimed it within 1d")
    assert error.exit_code == ExitCode.SITE_UNREACHABLE
    assert "did not take the job: no agent of site s claimed it within 1d" in error.message


class RefusingSession:
    """A session whose create is refused the way the broker refuses an unknown site."""

    def __init__(self, error: ProtocolError) -> None:
        self.error = error

    def json(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise self.error

    def close(self) -> None:
        pass


def job_run(tmp_path: Path, error: ProtocolError) -> BrokerJobRun:
    site = BrokerSite("mysite", "https://broker.example.org", str(tmp_path / "token"),
                      broker_site="no-such-site", where="bridge.toml: sites.mysite")  # fmt: skip
    request = JobRequest(str(uuid.uuid4()), "solve")
    return BrokerJobRun(site, request, [], str(tmp_path / "out"), None, None,  # type: ignore[arg-type]
                        session=RefusingSession(error))  # type: ignore[arg-type]


def test_an_unknown_site_at_the_broker_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    said = ("broker: no site 'no-such-site' is registered at this broker: on the broker host, "
            "create its token with `mint-bridge broker token create --site no-such-site "
            "--config /etc/broker.toml` and give it to the site's agent")  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        job_run(tmp_path, ProtocolError(said, field="site"))._create({})
    assert caught.value.exit_code == ExitCode.CONFIG_INVALID
    assert caught.value.message.startswith(said)
    where = "bridge.toml: sites.mysite: the site is 'no-such-site' at the broker"
    assert where in str(caught.value)


def test_other_refusals_of_the_create_stay_what_they_are(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError) as caught:
        job_run(tmp_path, ProtocolError("broker: bad command", field="command"))._create({})
    assert type(caught.value) is ProtocolError
