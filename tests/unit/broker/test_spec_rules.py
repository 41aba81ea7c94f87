"""Rules the server and its OpenAPI document now state alike (each failed before they did).

JSON has one number type, so ``7.0`` is the integer 7 (as JSON Schema reads it); every integer
fits signed 64 bits; calls that take no fields refuse any; a log offset past the end is a
conflict with what the broker holds (409 with Log-Size), not a malformed request; ``wait`` is
checked wherever it is sent. The document's patterns match exactly what the name checks allow.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.datastructures import Headers

from bridge.core.errors import BridgeError
from bridge.core.paths import check_name, check_relative_path
from bridge.core.strict_json import INT64_MAX
from broker import openapi_schemas
from broker.app import create_app
from broker.auth import new_token
from broker.config import BrokerConfig
from broker.errors import InvalidField
from broker.openapi import served_document
from broker.runtime import EXTENSION, Broker
from broker.store import Scope
from broker.validation import header_int, parse_complete, parse_create, parse_no_fields, query_int

SHA = hashlib.sha256(b"abc").hexdigest()


def test_an_integral_float_counts_as_the_integer() -> None:
    outcome, results, _ = parse_complete({
        "outcome": {"state": "failed", "exit_code": 7.0, "signal": 9.0},
        "results": [{"name": "r", "size": 3.0, "sha256": SHA, "mode": 420.0}]})  # fmt: skip
    assert (outcome["exit_code"], outcome["signal"]) == (7, 9)
    assert isinstance(outcome["exit_code"], int) and results[0].size == 3
    with pytest.raises(InvalidField, match="must be an integer"):
        parse_complete({"outcome": {"state": "failed", "exit_code": 7.5}})


@pytest.mark.parametrize("size", [INT64_MAX + 1, 1e300])
def test_integers_beyond_64_bits_are_refused_by_name(size: float) -> None:
    body = {"site": "s", "command": "x", "inputs": [{"name": "a", "size": size, "sha256": SHA}]}
    with pytest.raises(InvalidField) as raised:
        parse_create(body, "c")
    assert raised.value.field == "inputs[0].size"


def test_headers_and_queries_stay_within_64_bits() -> None:
    big = str(INT64_MAX + 1)
    assert header_int(Headers({"Lease-Epoch": str(INT64_MAX)}), "Lease-Epoch") == INT64_MAX
    with pytest.raises(InvalidField, match="from 0 to"):
        header_int(Headers({"Lease-Epoch": big}), "Lease-Epoch")
    with pytest.raises(InvalidField, match="from 0 to"):
        query_int({"offset": big}, "offset", 0)


@pytest.mark.parametrize("state", [{}, [], ["completed"], 1])
def test_an_outcome_state_of_another_type_is_refused_by_name(state: object) -> None:
    # An object or array here was a TypeError (a 500) before: found by the conformance run.
    with pytest.raises(InvalidField) as raised:
        parse_complete({"outcome": {"state": state}})
    assert raised.value.field == "outcome.state"


def test_a_call_without_fields_refuses_any() -> None:
    parse_no_fields({})
    with pytest.raises(InvalidField, match="takes none") as raised:
        parse_no_fields({"force": True})
    assert raised.value.field == "force"


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1",
                                   max_input_size=1000), housekeeping=False)  # fmt: skip


def _auth(app: Flask, scope: Scope, subject: str) -> dict[str, str]:
    broker = app.extensions[EXTENSION]
    assert isinstance(broker, Broker)
    token, record = new_token(scope, subject, 0.0)
    broker.store.create_token(record)
    return {"Authorization": f"Bearer {token}"}


def _job(app: Flask, headers: dict[str, str]) -> str:
    _auth(app, Scope.SITE, "s")
    body = {"job_id": str(uuid.uuid4()), "site": "s", "command": "x"}
    response = app.test_client().post("/api/v1/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return str(body["job_id"])


def _error(response: Any) -> tuple[int, str, str | None]:
    error = response.get_json()["error"]
    return response.status_code, error["code"], error.get("field")


def test_the_api_answers_by_these_rules(app: Flask) -> None:
    headers = _auth(app, Scope.CLIENT, "c")
    job_id, client = _job(app, headers), app.test_client()
    past = client.get(f"/api/v1/jobs/{job_id}/logs/stdout?offset=5", headers=headers)
    assert _error(past)[:2] == (409, "offset_mismatch") and past.headers["Log-Size"] == "0"
    wait = client.get(f"/api/v1/jobs/{job_id}?wait=-1", headers=headers)
    assert _error(wait) == (400, "invalid_field", "wait")
    extra = client.post(f"/api/v1/jobs/{job_id}/cancel", json={"force": True}, headers=headers)
    assert _error(extra) == (400, "invalid_field", "force")
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", json={}, headers=headers).status_code == 200


def test_the_served_document_carries_this_brokers_limits(app: Flask) -> None:
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    assert document == served_document(BrokerConfig(data_dir="x", max_input_size=1000))
    size = document["components"]["schemas"]["JobRequest"]["properties"]["inputs"]["items"]
    assert size["properties"]["size"]["maximum"] == 1000
    version = document["paths"]["/api/v1/jobs/{job_id}"]["get"]["parameters"][1]
    assert version["name"] == "version" and version["schema"]["maximum"] == INT64_MAX


NAMES = ["a", "a b", "é" * 10, "...", ".mint-bridgex", "x.mint-bridge-partx", "-a", ".", "..",
         ".mint-bridge", "x.mint-bridge-part", "a/b", "a\\b", "a\x01", "a\x7f", "", "x" * 256]
PATHS = ["a/b", "a/b/c.csv", ".mint-bridge-x/a", "a//b", "a/./b", "a/../b", "./a", "a/", "/a",
         "a/-b", "a/.mint-bridge/c", "a/b.mint-bridge-part", "a\x00/b", "-x/y"]


def _allowed(check: Any, value: str) -> bool:
    try:
        check(value)
    except BridgeError:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_the_name_pattern_is_the_name_check(name: str) -> None:
    matches = re.search(openapi_schemas.NAME_PATTERN, name) is not None
    assert matches == _allowed(check_name, name)


@pytest.mark.parametrize("path", NAMES + PATHS)
def test_the_path_pattern_is_the_path_check(path: str) -> None:
    matches = re.search(openapi_schemas.PATH_PATTERN, path) is not None
    assert matches == _allowed(check_relative_path, path)
