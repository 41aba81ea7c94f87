"""How ``mint-bridge run`` retries a lost connection: counted attempts, waits, then it gives up."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import pytest

from bridge.client.channel_job import JobRun
from bridge.core.errors import ParameterInvalid, TransportError
from bridge.core.job import JobRequest, new_job_id
from tests.support.frames import ScriptedChannel, site_script


class FlakyConnector:
    """Fails to connect ``failures`` times with ``error``, then plays a well-behaved site."""

    site_name = "flaky"

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.connects = 0

    def connect(self) -> FlakyConnector:
        self.connects += 1
        if self.connects <= self.failures:
            raise self.error
        return self

    def open_channel(self, timeout: float | None = None) -> ScriptedChannel:
        return ScriptedChannel(site_script("out.txt", b"result\n"))

    def close(self) -> None:
        pass


def run_with(connector: FlakyConnector, attempts: int, out_dir: Path) -> int:
    job = JobRun(
        connector,  # type: ignore[arg-type]
        JobRequest(new_job_id(), "x"),
        [],
        str(out_dir),
        io.BytesIO(),
        io.BytesIO(),
        reconnect_attempts=attempts,
    )
    return job.run().exit_code


@pytest.fixture(autouse=True)
def no_backoff_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


def test_a_first_attempt_that_works_needs_no_retry(tmp_path: Path) -> None:
    connector = FlakyConnector(0, TransportError("down"))
    assert run_with(connector, 3, tmp_path) == 0
    assert connector.connects == 1


def test_lost_connections_are_retried_with_backoff(
    tmp_path: Path, no_backoff_sleep: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    connector = FlakyConnector(2, TransportError("down"))
    with caplog.at_level(logging.WARNING):
        assert run_with(connector, 3, tmp_path) == 0
    assert connector.connects == 3
    assert (tmp_path / "out.txt").read_bytes() == b"result\n"
    assert len(no_backoff_sleep) == 2 and all(w > 0 for w in no_backoff_sleep)
    assert "reconnecting, attempt 2 of 3" in caplog.text
    assert "reconnecting, attempt 3 of 3" in caplog.text


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_the_bridge_gives_up_after_its_attempts(tmp_path: Path, attempts: int) -> None:
    connector = FlakyConnector(10, TransportError("down"))
    with pytest.raises(TransportError, match="down"):
        run_with(connector, attempts, tmp_path)
    assert connector.connects == attempts


def test_a_permanent_error_is_not_retried(tmp_path: Path, no_backoff_sleep: list[float]) -> None:
    connector = FlakyConnector(10, ParameterInvalid("bad"))
    with pytest.raises(ParameterInvalid):
        run_with(connector, 4, tmp_path)
    assert connector.connects == 1 and no_backoff_sleep == []
