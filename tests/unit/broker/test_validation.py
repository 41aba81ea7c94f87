"""Request validation: every refusal names the field, and what passes is what was sent."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from werkzeug.datastructures import Headers

from broker.errors import BrokerError, InvalidField, InvalidJson, MissingField, UnsafeName
from broker.validation import (
    EMPTY_SHA256,
    MAX_CLAIM_COMMAND_LENGTH,
    MAX_CLAIM_COMMANDS,
    header_int,
    header_sha256,
    parse_claim,
    parse_complete,
    parse_create,
    parse_json,
    parse_lease,
    query_state,
    query_wait,
)

SHA = hashlib.sha256(b"abc").hexdigest()
JOB_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def body(**extra: Any) -> dict[str, Any]:
    return {"job_id": JOB_ID, "site": "rme-u-tokyo", "command": "fatigue",
            "params": {"cycles": "1000", "n": 3, "x": 1.5, "flag": False},
            "inputs": [{"name": "a.dat", "size": 3, "sha256": SHA}], **extra}  # fmt: skip


def test_a_valid_create_body_becomes_the_spec() -> None:
    spec = parse_create(body(metadata={"wf": "7"}, walltime_limit=3600), "node1")
    assert (spec.job_id, spec.client, spec.site, spec.command) == (
        JOB_ID, "node1", "rme-u-tokyo", "fatigue")
    assert spec.params == {"cycles": "1000", "n": 3, "x": 1.5, "flag": False}
    assert [(i.name, i.size, i.sha256, i.mode) for i in spec.inputs] == [("a.dat", 3, SHA, 0o644)]
    assert spec.metadata == {"wf": "7"} and spec.walltime_limit == 3600.0


def test_a_missing_job_id_gets_a_fresh_uuid4() -> None:
    raw = body()
    del raw["job_id"]
    assert len({parse_create(raw, "c").job_id for _ in range(3)}) == 3


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        ({"site": None}, MissingField, "site"),
        ({"site": "a/b"}, InvalidField, "site"),
        ({"command": ""}, InvalidField, "command"),
        ({"command": "a\nb"}, InvalidField, "command"),
        ({"params": {"a": None}}, InvalidField, "params.a"),
        ({"params": {"a": float("inf")}}, InvalidField, "params.a"),
        ({"metadata": {"k": 1}}, InvalidField, "metadata.k"),
        ({"inputs": {}}, InvalidField, "inputs"),
        ({"inputs": ["a"]}, InvalidField, "inputs[0]"),
        ({"inputs": [{"name": "../a", "size": 1, "sha256": SHA}]}, UnsafeName, "inputs[0].name"),
        ({"inputs": [{"name": "a", "size": -1, "sha256": SHA}]}, InvalidField, "inputs[0].size"),
        ({"inputs": [{"name": "a", "size": True, "sha256": SHA}]}, InvalidField, "inputs[0].size"),
        ({"inputs": [{"name": "a", "size": 1, "sha256": SHA.upper()}]}, InvalidField,
         "inputs[0].sha256"),
        ({"inputs": [{"name": "a", "size": 0, "sha256": SHA}]}, InvalidField, "inputs[0].sha256"),
        ({"inputs": [{"name": "a", "size": 1, "sha256": SHA, "path": "/x"}]}, InvalidField,
         "inputs[0].path"),
        ({"inputs": [{"name": "a", "size": 1, "sha256": SHA}] * 2}, InvalidField,
         "inputs[1].name"),
        ({"walltime_limit": 0}, InvalidField, "walltime_limit"),
        ({"job_id": JOB_ID.upper()}, InvalidField, "job_id"),
        ({"program": "/bin/sh"}, InvalidField, "program"),
    ],
)  # fmt: skip
def test_invalid_create_bodies_name_the_field(
    change: dict[str, Any], error: type[BrokerError], field: str
) -> None:
    with pytest.raises(error) as raised:
        parse_create(body(**change), "node1")
    assert raised.value.field == field


def test_an_empty_input_must_carry_the_empty_digest() -> None:
    spec = parse_create(body(inputs=[{"name": "e", "size": 0, "sha256": EMPTY_SHA256}]), "c")
    assert spec.inputs[0].size == 0


@pytest.mark.parametrize("raw", [b"{", b"[]", b"\xff", b"1", b'{"a": NaN}', b'{"a": Infinity}'])
def test_bodies_that_are_not_json_objects_are_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidJson):
        parse_json(raw)


def test_an_empty_body_is_an_empty_object_only_where_nothing_is_required() -> None:
    assert parse_json(b"", required=False) == {}
    with pytest.raises(InvalidJson):
        parse_json(b"")


def test_agent_bodies() -> None:
    assert parse_claim({"agent_id": "host1.site:42"}) == ("host1.site:42", None)
    with pytest.raises(InvalidField):
        parse_claim({"agent_id": "a b"})
    assert parse_lease({}) == (False, None)
    assert parse_lease({"state": "running", "native_id": "123"}) == (True, "123")
    outcome, results, skipped = parse_complete({
        "outcome": {"state": "rejected", "reason": "no", "error_kind": "CommandNotAllowed"},
        "results": [{"name": "sub/r.csv", "size": 3, "sha256": SHA, "mode": 0o600}],
        "skipped": [{"name": "leak", "reason": "symlink"}],
    })  # fmt: skip
    assert outcome == {"state": "rejected", "exit_code": None, "signal": None, "reason": "no",
                       "error_kind": "CommandNotAllowed"}  # fmt: skip
    assert [(r.name, r.mode) for r in results] == [("sub/r.csv", 0o600)]
    assert skipped == [{"name": "leak", "reason": "symlink"}]


@pytest.mark.parametrize(
    ("raw", "field"),
    [({"outcome": {"state": "done"}}, "outcome.state"),
     ({"outcome": {"state": "failed", "signal": 0}}, "outcome.signal"),
     ({"outcome": {"state": "failed"}, "results": [{"name": "/etc/x", "size": 1,
                                                    "sha256": SHA}]}, "results[0].name"),
     ({"outcome": {"state": "failed"}, "results": [{"name": "a/../b", "size": 1,
                                                    "sha256": SHA}]}, "results[0].name")],
)  # fmt: skip
def test_invalid_completions_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(BrokerError) as raised:
        parse_complete(raw)
    assert raised.value.field == field


def test_a_claim_lists_the_commands_its_agent_runs() -> None:
    path = "/opt/Abaqus/Commands/abaqus job=x"  # an original whitelist's command string
    got = parse_claim({"agent_id": "a1", "commands": ["fatigue", path, "mint-bridge-probe"]})
    assert got == ("a1", frozenset({"fatigue", path, "mint-bridge-probe"}))
    long = "x" * MAX_CLAIM_COMMAND_LENGTH
    assert parse_claim({"agent_id": "a1", "commands": [long]}) == ("a1", frozenset({long}))


@pytest.mark.parametrize(
    ("commands", "field", "words"),
    [
        (None, "commands", "not null"),
        ("fatigue", "commands", "not a string"),
        ({"fatigue": 1}, "commands", "not an object"),
        ([], "commands", "leave it out"),
        (["c"] * 2, "commands[1]", "listed twice"),
        ([f"c{i}" for i in range(MAX_CLAIM_COMMANDS + 1)], "commands", f"1-{MAX_CLAIM_COMMANDS}"),
        (["ok", 7], "commands[1]", "must be a string, not a number"),
        (["ok", ""], "commands[1]", "1-1024 characters"),
        (["x" * (MAX_CLAIM_COMMAND_LENGTH + 1)], "commands[0]", "1-1024 characters"),
        (["run\nrm -rf /"], "commands[0]", "control characters"),
    ],
)
def test_invalid_claim_commands_name_the_field(commands: object, field: str, words: str
                                               ) -> None:  # fmt: skip
    with pytest.raises(InvalidField) as refused:
        parse_claim({"agent_id": "a1", "commands": commands})
    assert refused.value.field == field and words in refused.value.message


def test_headers_and_query_values() -> None:
    headers = Headers({"Upload-Offset": "42", "Bad": "4x", "Upload-SHA256": SHA.upper()})
    assert header_int(headers, "Upload-Offset") == 42
    with pytest.raises(MissingField):
        header_int(headers, "Missing")
    with pytest.raises(InvalidField):
        header_int(headers, "Bad")
    assert header_sha256(headers, "Upload-SHA256") == SHA
    assert query_wait({"wait": "500"}, 50) == 50
    assert query_wait({}, 50) == 0
    with pytest.raises(InvalidField):
        query_wait({"wait": "nan"}, 50)
    assert query_state({"state": "queued"}) is not None
    with pytest.raises(InvalidField):
        query_state({"state": "done"})
