"""Token expiry: 401 with the reason after it, --expires as typed, token list and /health."""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from broker.auth import new_token
from broker.cli import cli
from broker.errors import InvalidField
from broker.store import Scope
from broker.token_expiry import health, parse_expires
from tests.unit.broker.test_app import Clock, broker_of


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Flask:
    from broker.app import create_app
    from broker.config import BrokerConfig

    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1")
    return create_app(config, housekeeping=False, clock=clock)


def _token(app: Flask, clock: Clock, expires_in: float | None) -> tuple[str, str]:
    end = clock.now + expires_in if expires_in is not None else None
    text, record = new_token(Scope.CLIENT, "c", clock.now, end)
    broker_of(app).store.create_token(record)
    return text, record.token_id


def test_a_token_works_until_it_expires_then_is_401_with_the_reason(
    app: Flask, clock: Clock
) -> None:
    text, token_id = _token(app, clock, 60)
    headers = {"Authorization": f"Bearer {text}"}
    client = app.test_client()
    assert client.get("/api/v1/jobs", headers=headers).status_code != 401
    clock.now += 60
    answer = client.get("/api/v1/jobs", headers=headers)
    assert answer.status_code == 401
    message = answer.get_json()["error"]["message"]
    assert message.startswith(f"token {token_id} expired at ")
    assert "ask the broker's operator for a new one" in message
    assert text not in answer.get_data(as_text=True)


def test_the_legacy_api_refuses_an_expired_token_too(tmp_path: Path, clock: Clock) -> None:
    from broker.app import create_app
    from broker.config import BrokerConfig
    from broker.legacy.config import LegacyConfig

    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1",
                          legacy=LegacyConfig(enabled=True, sites={"s": ("run.sh",)}))  # fmt: skip
    app = create_app(config, housekeeping=False, clock=clock)
    text, _ = _token(app, clock, 5)
    clock.now += 10
    answer = app.test_client().post("/mi-distcomp-api/add-calcinfo", data=b"{}",
                                    headers={"Authorization": f"Bearer {text}"})  # fmt: skip
    assert answer.status_code == 401
    assert "expired at" in answer.get_data(as_text=True)


def test_health_counts_expired_and_soon_expiring_tokens(app: Flask, clock: Clock) -> None:
    _token(app, clock, 60)  # expires within 14 days
    _token(app, clock, 30 * 86400)  # later
    _token(app, clock, None)  # never
    first = app.test_client().get("/api/v1/health").get_json()["tokens"]
    assert first == {"expired": 0, "expiring": 1, "expiring_within_days": 14, "attention": True}
    clock.now += 61
    later = app.test_client().get("/api/v1/health").get_json()["tokens"]
    assert later["expired"] == 1 and later["expiring"] == 0 and later["attention"]


def test_health_needs_no_attention_without_expiring_tokens() -> None:
    assert health([], 0.0)["attention"] is False


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30d", 30 * 86400.0), ("12h", 43200.0), ("90s", 90.0)],
)
def test_expires_as_a_duration(value: str, seconds: float) -> None:
    assert parse_expires(value, 1000.0) == 1000.0 + seconds


def test_expires_as_a_utc_date() -> None:
    midnight = calendar.timegm((2027, 1, 31, 0, 0, 0))
    assert parse_expires("2027-01-31", 0.0) == midnight
    assert parse_expires("2027-01-31T12:00:00Z", 0.0) == midnight + 43200


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("2001-01-01", "is not in the future"), ("2027-02-30", "is not a valid date"),
     ("soon", "is not a duration"), ("0s", "is not in the future")],
)  # fmt: skip
def test_a_bad_expires_is_named_with_a_working_example(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_expires(value, time.time())


def test_a_token_cannot_be_made_already_expired() -> None:
    with pytest.raises(InvalidField, match="expires must be in the future"):
        new_token(Scope.CLIENT, "c", 100.0, 100.0)


def _config(tmp_path: Path) -> str:
    path = tmp_path / "broker.toml"
    path.write_text('[server]\ntls = false\nhost = "127.0.0.1"\n[storage]\ndata_dir = "d"\n')
    return str(path)


def test_token_create_expires_and_token_list_shows_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    made = CliRunner().invoke(cli, ["token", "create", "--client", "c", "--expires", "30d",
                                    "--config", config])  # fmt: skip
    assert made.exit_code == 0, made.output
    lasting = CliRunner().invoke(cli, ["token", "create", "--client", "d", "--config", config])
    assert lasting.exit_code == 0, lasting.output
    listed = CliRunner().invoke(cli, ["token", "list", "--config", config])
    lines = listed.output.splitlines()
    assert re.search(r"\bc\b.*active\s+expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[0])
    assert re.search(r"\bd\b.*active\s+no expiry", lines[1])


def test_token_create_names_a_bad_expires(tmp_path: Path) -> None:
    bad = CliRunner().invoke(cli, ["token", "create", "--client", "c", "--expires", "tomorrow",
                                   "--config", _config(tmp_path)])  # fmt: skip
    assert bad.exit_code == 2
    assert "--expires" in bad.output and "use seconds or a number with s/m/h/d/w" in bad.output
