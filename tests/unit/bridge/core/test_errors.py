"""Errors on the wire and the exit codes they give."""

from __future__ import annotations

import pytest

from bridge.core import errors
from bridge.core.errors import (
    BridgeError,
    CommandNotAllowed,
    ConfigError,
    ExitCode,
    InputRejected,
    JobFailedAtSite,
    JobRejected,
    JobUnknown,
    ParameterInvalid,
    ProtocolError,
    SiteError,
    StagingError,
    TransferCorrupted,
    TransportError,
    from_wire,
)

WIRE_KINDS = [
    (CommandNotAllowed, ExitCode.COMMAND_NOT_ALLOWED),
    (ParameterInvalid, ExitCode.PARAMETER_INVALID),
    (InputRejected, ExitCode.PARAMETER_INVALID),
    (JobRejected, ExitCode.PARAMETER_INVALID),
    (ProtocolError, ExitCode.PROTOCOL_ERROR),
    (TransferCorrupted, ExitCode.TRANSFER_CORRUPTED),
    (StagingError, ExitCode.STAGING_FAILED),
    (JobUnknown, ExitCode.JOB_UNKNOWN),
    (SiteError, ExitCode.SITE_ERROR),
]


@pytest.mark.parametrize(("cls", "code"), WIRE_KINDS)
def test_from_wire_maps_each_kind(cls: type[BridgeError], code: ExitCode) -> None:
    sent = cls("something went wrong", field="params.n")
    wire = sent.to_wire()
    assert wire == {"kind": cls.__name__, "message": "something went wrong", "field": "params.n"}
    got = from_wire(wire)
    assert type(got) is cls
    assert got.message == "something went wrong"
    assert str(got) == "something went wrong"
    assert got.field == "params.n"
    assert got.exit_code == code


def test_to_wire_leaves_out_a_missing_field() -> None:
    assert SiteError("x").to_wire() == {"kind": "SiteError", "message": "x"}
    assert from_wire({"kind": "SiteError", "message": "x"}).field is None


@pytest.mark.parametrize(
    "kind",
    [
        "ConfigError",  # a real class, but not one a site may send
        "TransportError",  # would make the bridge retry on the peer's say-so
        "HostKeyRejected",
        "Cancelled",
        "KeyboardInterrupt",
        "BridgeError",
        "",
        None,
        42,
    ],
)
def test_unknown_or_unsendable_kinds_become_site_errors(kind: object) -> None:
    got = from_wire({"kind": kind, "message": "boom"})
    assert type(got) is SiteError
    assert got.message == "boom"
    assert got.exit_code == ExitCode.SITE_ERROR
    assert got.transient is False


def test_an_idle_close_by_the_site_is_retried() -> None:
    """The site closed a session whose upload never arrived (a black-holed link): the bridge,
    which did send, retries the submit instead of failing the job with exit 70."""
    got = from_wire({"kind": "PeerIdle", "message": "the peer sent nothing for 5 s"})
    assert got.transient is True
    assert "the site closed the session: the peer sent nothing for 5 s" in got.message


@pytest.mark.parametrize("wire", [None, "error", ["SiteError", "x"], 3])
def test_malformed_wire_errors_are_protocol_errors(wire: object) -> None:
    got = from_wire(wire)
    assert type(got) is ProtocolError
    assert got.message == f"site sent a malformed error: {wire!r:.200}"


def test_from_wire_bounds_and_defaults_the_message() -> None:
    assert from_wire({"kind": "SiteError"}).message == "site reported an error without a message"
    assert from_wire({"kind": "SiteError", "message": "m" * 5000}).message == "m" * 2000
    assert from_wire({"kind": "SiteError", "message": 7, "field": 3}).field == "3"
    assert from_wire({"kind": "SiteError", "message": 7}).message == "7"


def test_exit_codes_and_transience_of_local_errors() -> None:
    assert ConfigError("x").exit_code == ExitCode.CONFIG_INVALID == 78
    assert TransportError("x").transient is True
    assert errors.SiteUnreachable("x").transient is True
    assert errors.SiteUnreachable("x").exit_code == ExitCode.SITE_UNREACHABLE
    assert errors.HostKeyRejected("x").transient is False
    assert errors.HostKeyRejected("x").exit_code == ExitCode.HOST_KEY_REJECTED
    assert errors.AuthenticationFailed("x").transient is False
    assert errors.AuthenticationFailed("x").exit_code == ExitCode.AUTH_FAILED
    assert errors.InputMissing("x").exit_code == ExitCode.INPUT_MISSING
    assert errors.Cancelled("x").exit_code == 143
    failed = JobFailedAtSite("walltime", ExitCode.WALLTIME_EXCEEDED)
    assert failed.exit_code == 82
    assert str(failed) == "walltime"


def test_hierarchy() -> None:
    assert issubclass(TransferCorrupted, ProtocolError)
    for cls in (CommandNotAllowed, ParameterInvalid, InputRejected):
        assert issubclass(cls, JobRejected)
    for cls, _ in WIRE_KINDS:
        assert issubclass(cls, BridgeError)
