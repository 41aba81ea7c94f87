"""Hostile request bodies against the real Flask app (v1 and legacy APIs): each a clean 400."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from broker.app import create_app
from broker.auth import new_token
from broker.config import BrokerConfig
from broker.legacy.config import LegacyConfig
from broker.runtime import EXTENSION, Broker
from broker.store import Scope

JOB = b'"job_id": "6f1c3a0e-8e9b-4c51-9d0e-6f3b1d2a7c44", "command": "x"'
DEEP = 100_000

# (case id, body, expected code, a fragment of the message)
BODIES: list[tuple[str, bytes, str, str]] = [
    ("deep-100k", b"[" * DEEP + b"]" * DEEP, "invalid_json", "nests arrays/objects"),
    (
        "deep-object-10k",
        b'{"site":' * 10_000 + b'"s"' + b"}" * 10_000,
        "invalid_json",
        "nests arrays/objects",
    ),
    (
        "duplicate-site",
        b'{"site": "b", ' + JOB + b', "site": "s"}',
        "invalid_json",
        "duplicate key 'site'",
    ),
    (
        "surrogate-command",
        b'{"site": "s", "job_id": "6f1c3a0e-8e9b-4c51-9d0e-6f3b1d2a7c44", "command": "x\\ud800"}',
        "invalid_json",
        "'command' holds a lone UTF-16 surrogate",
    ),
    (
        "surrogate-input-name",
        b'{"site": "s", ' + JOB + b', "inputs": [{"name": "a\\udcff", '
        b'"size": 1, "sha256": "' + b"0" * 64 + b'"}]}',
        "invalid_json",
        "'inputs[0].name' holds",
    ),
    (
        "surrogate-param",
        b'{"site": "s", ' + JOB + b', "params": {"p": "\\udfff"}}',
        "invalid_json",
        "'params.p' holds a lone",
    ),
    (
        "size-2-pow-70",
        b'{"site": "s", ' + JOB + b', "inputs": [{"name": "a", '
        b'"size": 1180591620717411303424, "sha256": "' + b"0" * 64 + b'"}]}',
        "invalid_json",
        "outside signed 64 bits",
    ),
    (
        "nan-walltime",
        b'{"site": "s", ' + JOB + b', "walltime": NaN}',
        "invalid_json",
        "NaN is not a JSON number",
    ),
    ("non-utf8", b'{"site": "s\xff"}', "invalid_json", "is not UTF-8"),
    ("not-an-object", b"[1, 2]", "invalid_json", "must be a JSON object"),
]


def _app(tmp_path: Path) -> Flask:
    legacy = LegacyConfig(enabled=True, sites={"s": ("run.sh",)})
    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1",
                          max_json_size=4 * 1024 * 1024, legacy=legacy)  # fmt: skip
    return create_app(config, housekeeping=False)


def _auth(app: Flask, scope: Scope, subject: str) -> dict[str, str]:
    broker = app.extensions[EXTENSION]
    assert isinstance(broker, Broker)
    token, record = new_token(scope, subject, 0.0)
    broker.store.create_token(record)
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return _app(tmp_path_factory.mktemp("broker"))


@pytest.mark.parametrize(("body", "code", "fragment"), [c[1:] for c in BODIES],
                         ids=[c[0] for c in BODIES])  # fmt: skip
def test_a_hostile_job_body_is_a_clean_400(app: Flask, body: bytes, code: str,
                                           fragment: str) -> None:  # fmt: skip
    headers = _auth(app, Scope.CLIENT, "c")
    response = app.test_client().post("/api/v1/jobs", data=body, headers=headers)
    assert response.status_code == 400, response.data[:300]
    error = response.get_json()["error"]
    assert error["code"] == code
    assert fragment in error["message"]


def test_the_field_of_a_bad_string_is_in_the_error_body(app: Flask) -> None:
    headers = _auth(app, Scope.CLIENT, "c")
    response = app.test_client().post("/api/v1/jobs", data=BODIES[4][1], headers=headers)
    assert response.get_json()["error"]["field"] == "inputs[0].name"


def test_nothing_was_stored_for_the_refused_bodies(app: Flask) -> None:
    headers = _auth(app, Scope.CLIENT, "c")
    for _, body, _, _ in BODIES:
        app.test_client().post("/api/v1/jobs", data=body, headers=headers)
    listed = app.test_client().get("/api/v1/jobs", headers=headers)
    assert listed.status_code in (200, 404, 405)
    if listed.status_code == 200:
        assert listed.get_json().get("jobs", []) == []


LEGACY = "/mi-distcomp-api"
LEGACY_BODIES: list[tuple[str, str, bytes, str]] = [
    (
        "legacy-deep",
        "add-calcinfo",
        b'{"calc-info":' * DEEP + b"{}" + b"}" * DEEP,
        "nests arrays/objects",
    ),
    ("legacy-duplicate", "add-calcinfo", b'{"calc-info": {}, "calc-info": {}}', "duplicate key"),
    (
        "legacy-surrogate",
        "add-calcinfo",
        b'{"calc-info": {"command": "run.sh\\ud800"}}',
        "holds a lone UTF-16 surrogate",
    ),
    (
        "legacy-big-int",
        "allow-wait-calc",
        b'{"accept_id": 1180591620717411303424}',
        "outside signed 64 bits",
    ),
]


@pytest.mark.parametrize(("endpoint", "body", "fragment"), [c[1:] for c in LEGACY_BODIES],
                         ids=[c[0] for c in LEGACY_BODIES])  # fmt: skip
def test_a_hostile_legacy_body_is_a_clean_400(app: Flask, endpoint: str, body: bytes,
                                              fragment: str) -> None:  # fmt: skip
    headers = _auth(app, Scope.CLIENT, "wf")
    response = app.test_client().post(f"{LEGACY}/{endpoint}", data=body, headers=headers)
    assert response.status_code == 400, response.data[:300]
    assert fragment in response.get_data(as_text=True)
