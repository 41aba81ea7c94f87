"""Job ids, requests and outcomes as both ends exchange them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from bridge.core.errors import ExitCode, InputRejected, ProtocolError
from bridge.core.job import (
    InputDecl,
    JobOutcome,
    JobRequest,
    JobState,
    check_job_id,
    new_job_id,
)

JOB_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_new_job_ids_are_valid_and_distinct() -> None:
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    for job_id in ids:
        assert check_job_id(job_id) == job_id


@pytest.mark.parametrize(
    "value",
    [
        JOB_ID.upper(),
        str(uuid.uuid1()),  # not version 4
        "0f8fad5b-d9cb-469f-c165-70867728950e",  # wrong variant
        JOB_ID + "\n",
        "\n" + JOB_ID,
        JOB_ID + "/..",
        "../" + JOB_ID,
        JOB_ID[:-1],
        JOB_ID.replace("-", ""),
        "",
        None,
        42,
        ["x"],
    ],
)
def test_check_job_id_rejects_anything_but_a_lowercase_uuid4(value: object) -> None:
    with pytest.raises(ProtocolError) as info:
        check_job_id(value)
    assert str(info.value) == f"job id {value!r:.60} is not a UUID4"


def make_request() -> JobRequest:
    return JobRequest(
        JOB_ID,
        "solve",
        {"n": 3, "x": 1.5, "flag": True, "label": "run"},
        (InputDecl("a.dat", 10, 0o644), InputDecl("データ.csv", 0, 0o755)),
        {"workflow": "wf-1"},
    )


def test_request_round_trips_through_json() -> None:
    request = make_request()
    wire = json.loads(json.dumps(request.to_message()))
    assert wire == {
        "job_id": JOB_ID,
        "command": "solve",
        "params": {"n": 3, "x": 1.5, "flag": True, "label": "run"},
        "inputs": [
            {"name": "a.dat", "size": 10, "mode": 0o644},
            {"name": "データ.csv", "size": 0, "mode": 0o755},
        ],
        "metadata": {"workflow": "wf-1"},
    }
    assert JobRequest.from_message(wire) == request


def test_request_defaults() -> None:
    request = JobRequest.from_message({"job_id": JOB_ID, "command": "c"})
    assert request == JobRequest(JOB_ID, "c", {}, (), {})
    decl = JobRequest.from_message(
        {"job_id": JOB_ID, "command": "c", "inputs": [{"name": "a", "size": 1}]}
    ).inputs
    assert decl == (InputDecl("a", 1, 0o644),)


def base(**changes: Any) -> dict[str, Any]:
    message = make_request().to_message()
    message.update(changes)
    return message


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (base(job_id="not-a-uuid"), "job id 'not-a-uuid' is not a UUID4"),
        (base(job_id=None), "job id None is not a UUID4"),
        (base(command=""), "request has no command name"),
        (base(command=None), "request has no command name"),
        (base(command=["sh"]), "request has no command name"),
        (base(params=[]), "params must be an object of names to strings or numbers"),
        (base(params={"n": None}), "params must be an object of names to strings or numbers"),
        (base(params={"n": [1]}), "params must be an object of names to strings or numbers"),
        (base(params={"n": {"a": 1}}), "params must be an object of names to strings or numbers"),
        (base(metadata=[]), "metadata must be an object"),
        (base(inputs={}), "inputs must be a list"),
        (base(inputs=["a.dat"]), "each input must be an object with name and size"),
        (base(inputs=[{"name": "a", "size": -1}]), "input 'a' has an invalid size -1"),
        (base(inputs=[{"name": "a", "size": "1"}]), "input 'a' has an invalid size '1'"),
        (base(inputs=[{"name": "a", "size": True}]), "input 'a' has an invalid size True"),
        (base(inputs=[{"name": "a"}]), "input 'a' has an invalid size None"),
        (base(inputs=[{"name": "a", "size": 1, "mode": "0644"}]), "input 'a' has an invalid mode"),
        (base(inputs=[{"name": "a", "size": 1, "mode": None}]), "input 'a' has an invalid mode"),
        (
            base(inputs=[{"name": "a", "size": 1}, {"name": "a", "size": 2}]),
            "input 'a' is declared twice",
        ),
    ],
)
def test_request_rejects_malformed_messages(message: dict[str, Any], error: str) -> None:
    with pytest.raises(ProtocolError) as info:
        JobRequest.from_message(message)
    assert str(info.value) == error


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "a/b", "..", "-rf", "", ".mint-bridge"])
def test_request_rejects_unsafe_input_names(name: str) -> None:
    with pytest.raises(InputRejected) as info:
        JobRequest.from_message(base(inputs=[{"name": name, "size": 1}]))
    assert info.value.field == "input name"
    assert str(info.value).startswith("input name ")


def test_request_masks_input_modes_and_bounds_metadata() -> None:
    message = base(
        inputs=[{"name": "a", "size": 1, "mode": 0o104755}],
        metadata={f"k{i}" + "x" * 100: "v" * 5000 for i in range(40)},
    )
    request = JobRequest.from_message(message)
    assert request.inputs == (InputDecl("a", 1, 0o4755),)
    assert len(request.metadata) == 32
    assert all(len(k) == 64 and len(v) == 1024 for k, v in request.metadata.items())


# --- outcomes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (JobOutcome(JobState.COMPLETED, exit_code=0), 0),
        (JobOutcome(JobState.FAILED, exit_code=5), 5),
        (JobOutcome(JobState.FAILED, exit_code=255), 255),
        (JobOutcome(JobState.FAILED, signal=9), 137),
        (JobOutcome(JobState.FAILED, signal=15), 143),
        (JobOutcome(JobState.FAILED, exit_code=1, signal=11), 139),  # the signal wins
        (JobOutcome(JobState.TIMEOUT, exit_code=0), int(ExitCode.WALLTIME_EXCEEDED)),
        (JobOutcome(JobState.OUT_OF_MEMORY, signal=9), int(ExitCode.OUT_OF_MEMORY)),
        (JobOutcome(JobState.NODE_FAIL), int(ExitCode.NODE_FAILURE)),
        (JobOutcome(JobState.PREEMPTED), int(ExitCode.PREEMPTED)),
        (JobOutcome(JobState.CANCELLED, signal=15), int(ExitCode.CANCELLED_AT_SITE)),
        (JobOutcome(JobState.LOST), int(ExitCode.JOB_LOST)),
        (JobOutcome(JobState.FAILED), int(ExitCode.JOB_LOST)),  # no code, no signal
    ],
)
def test_bridge_exit_code(outcome: JobOutcome, code: int) -> None:
    assert outcome.bridge_exit_code() == code


def test_our_exit_codes_are_distinct_and_named() -> None:
    assert ExitCode.WALLTIME_EXCEEDED == 82
    assert ExitCode.OUT_OF_MEMORY == 83
    assert ExitCode.NODE_FAILURE == 84
    assert ExitCode.PREEMPTED == 85
    assert ExitCode.CANCELLED_AT_SITE == 86
    assert ExitCode.JOB_LOST == 81
    values = [int(code) for code in ExitCode]
    assert len(values) == len(set(values))
    assert all(64 <= v < 128 for v in values if v not in (0, 143))


@pytest.mark.parametrize("state", list(JobState))
def test_final_states(state: JobState) -> None:
    expected = state not in (JobState.QUEUED, JobState.HELD, JobState.RUNNING)
    assert state.is_final is expected


def test_outcome_round_trips() -> None:
    outcome = JobOutcome(JobState.FAILED, exit_code=None, signal=9, reason="killed")
    wire = json.loads(json.dumps(outcome.to_message()))
    assert wire == {"state": "failed", "exit_code": None, "signal": 9, "reason": "killed"}
    assert JobOutcome.from_message(wire) == outcome
    assert JobOutcome.from_message({"state": "completed"}) == JobOutcome(JobState.COMPLETED)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"state": "exploded"}, "unknown job state 'exploded'"),
        ({}, "unknown job state None"),
        ({"state": "failed", "exit_code": "1"}, "expected an integer, got '1'"),
        ({"state": "failed", "exit_code": True}, "expected an integer, got True"),
        ({"state": "failed", "signal": 1.5}, "expected an integer, got 1.5"),
        ({"state": "failed", "exit_code": 256}, "exit code 256 is outside 0-255"),
        ({"state": "failed", "exit_code": -1}, "exit code -1 is outside 0-255"),
        ({"state": "failed", "signal": 0}, "signal 0 is outside 1-127"),
        ({"state": "failed", "signal": 128}, "signal 128 is outside 1-127"),
    ],
)
def test_outcome_rejects_malformed_messages(message: dict[str, Any], error: str) -> None:
    with pytest.raises(ProtocolError) as info:
        JobOutcome.from_message(message)
    assert str(info.value) == error


def test_an_out_of_range_exit_code_never_becomes_success() -> None:
    # A process exit status is taken modulo 256: 256 would look like success to MInt.
    with pytest.raises(ProtocolError):
        JobOutcome.from_message({"state": "failed", "exit_code": 256})


def test_outcome_reason_is_bounded() -> None:
    outcome = JobOutcome.from_message({"state": "lost", "reason": "r" * 5000})
    assert outcome.reason == "r" * 2000
