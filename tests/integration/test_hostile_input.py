"""Hostile input through the real server (gunicorn, TLS) and the site entry over pipes: each
refused cleanly, with the rule named, and the server still answers afterwards."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.broker import BrokerProcess
from tests.support.site_toml import write_site_toml

DEEP = 100_000
JOB = b'"job_id": "6f1c3a0e-8e9b-4c51-9d0e-6f3b1d2a7c44", "site": "s", "command": "x"'

OVER_TLS: list[tuple[str, bytes, str]] = [
    ("deep-100k", b"[" * DEEP + b"]" * DEEP, "nests arrays/objects more than 32 deep"),
    ("duplicate-key", b'{"site": "b", ' + JOB + b"}", "duplicate key 'site'"),
    ("surrogate", b'{"command": "x\\ud800", "site": "s"}', "holds a lone UTF-16 surrogate"),
    ("size-2-pow-70", b'{' + JOB + b', "inputs": [{"name": "a", "size": 1180591620717411303424,'
     b' "sha256": "' + b"0" * 64 + b'"}]}', "outside signed 64 bits"),
]  # fmt: skip


def _post(broker: BrokerProcess, token: str, body: bytes) -> requests.Response:
    return requests.post(
        f"{broker.url}/api/v1/jobs", data=body, timeout=60, verify=str(broker.ca_bundle),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip


@pytest.mark.parametrize(("body", "fragment"), [c[1:] for c in OVER_TLS],
                         ids=[c[0] for c in OVER_TLS])  # fmt: skip
def test_hostile_bodies_over_tls_are_clean_400s(
    broker: BrokerProcess, body: bytes, fragment: str
) -> None:
    answer = _post(broker, broker.token("client", "hostile"), body)
    assert answer.status_code == 400, answer.text[:300]
    error = answer.json()["error"]
    assert error["code"] == "invalid_json"
    assert fragment in error["message"]
    health = requests.get(f"{broker.url}/api/v1/health", timeout=30,
                          verify=str(broker.ca_bundle))  # fmt: skip
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert "RecursionError" not in broker.log_tail(200)


def test_an_expired_token_is_refused_over_tls_and_counted_in_health(
    broker: BrokerProcess,
) -> None:
    made = broker.cli("token", "create", "--client", "short", "--expires", "1s")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    time.sleep(1.5)  # let the expiry pass; nothing here is timed
    answer = _post(broker, token, b"{}")
    assert answer.status_code == 401
    assert "expired at" in answer.json()["error"]["message"]
    health = requests.get(f"{broker.url}/api/v1/health", timeout=30,
                          verify=str(broker.ca_bundle)).json()  # fmt: skip
    assert health["tokens"]["expired"] >= 1 and health["tokens"]["attention"] is True
    listed = broker.cli("token", "list").stdout
    assert any("short" in line and "expired" in line for line in listed.splitlines())


def _site_config(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return write_site_toml(
        tmp_path / "site.toml",
        site={"name": "s", "work_base": tmp_path / "work", "log_file": tmp_path / "site.log"},
        commands={"echo": {"program": "/bin/echo"}},
    )


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [(b"[" * DEEP + b"]" * DEEP, b"nests arrays/objects"),
     (b'{"op": "x", "op": "y"}', b"duplicate key 'op'"),
     (b'{"op": "\\udfff"}', b"lone UTF-16 surrogate")],
    ids=["deep-100k", "duplicate-key", "surrogate"],
)  # fmt: skip
def test_hostile_frames_at_the_site_entry_over_pipes_get_an_error_frame(
    tmp_path: Path, payload: bytes, fragment: bytes
) -> None:
    config = _site_config(tmp_path)
    env = {**os.environ, "SSH_ORIGINAL_COMMAND": "mint-bridge-protocol"}
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "site", "serve-ssh", "--config", str(config)],
        input=struct.pack(">cI", b"J", len(payload)) + payload, capture_output=True,
        timeout=60, env=env, check=False,
    )  # fmt: skip
    assert b"Traceback" not in done.stderr and b"RecursionError" not in done.stderr
    assert fragment in done.stdout, (done.stdout[-500:], done.stderr[-500:])
