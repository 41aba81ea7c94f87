"""The broker's errors: each carries its HTTP status, a stable code and the headers it needs.

Every error the API answers is ``{"error": {"code", "message", "field"?}}``; the codes are the
contract (docs/broker-api.md) and never change meaning. Foreign exceptions (sqlite3, OSError,
werkzeug's HTTP exceptions) are converted where they enter broker code or here, in the one
error handler; this module never lets a traceback, a token or a request header reach a client.

    BridgeError                               (bridge.core.errors)
    └── BrokerError                           status 500, code internal_error
        ├── BadRequest            400         bad_request
        │   ├── InvalidJson       400         invalid_json
        │   ├── MissingField      400         missing_field
        │   ├── InvalidField      400         invalid_field
        │   ├── UnsafeName        400         unsafe_name
        │   ├── ChecksumMismatch  400         checksum_mismatch
        │   ├── UnknownSite       400         unknown_site (no active site token for it)
        │   └── BodyCut           400         bad_request (the client hung up mid-body)
        ├── Unauthorized          401         unauthorized
        ├── Forbidden             403         forbidden
        ├── NotFound              404         not_found
        ├── MethodNotAllowed      405         method_not_allowed
        ├── RangeNotSatisfiable   416         range_not_satisfiable (+ Content-Range)
        ├── StateConflict         409         conflict
        │   ├── AlreadyClaimed    409         already_claimed
        │   ├── StaleEpoch        409         stale_epoch
        │   ├── OffsetMismatch    409         offset_mismatch (+ Upload-Offset or Log-Size)
        │   ├── InputsIncomplete  409         inputs_incomplete
        │   └── InvalidState      409         invalid_state
        ├── TooLarge              413         too_large
        ├── StorageFull           507         storage_full (the broker's disk; not retried)
        ├── RateLimited           429         rate_limited (+ Retry-After)
        └── Unavailable           503         unavailable (+ Retry-After)
            └── StoreError        503         the database is busy or failed (transient)
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from bridge.core.errors import BridgeError

log = logging.getLogger(__name__)


class BrokerError(BridgeError):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.extra)
        return {"error": error}


class BadRequest(BrokerError):
    status, code = 400, "bad_request"


class InvalidJson(BadRequest):
    code = "invalid_json"


class MissingField(BadRequest):
    code = "missing_field"

    def __init__(self, field: str, what: str = "is required") -> None:
        super().__init__(f"{field} {what}", field=field)


class InvalidField(BadRequest):
    code = "invalid_field"


class UnsafeName(BadRequest):
    code = "unsafe_name"


class ChecksumMismatch(BadRequest):
    code = "checksum_mismatch"


class UnknownSite(BadRequest):
    """A job for a site this broker does not serve: no agent could ever claim it."""

    code = "unknown_site"


class BodyCut(BadRequest):
    """The request body ended before its Content-Length; what arrived was kept."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the request body was cut short after {received} bytes")
        self.received = received


class Unauthorized(BrokerError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="mint-bridge"'})


class Forbidden(BrokerError):
    status, code = 403, "forbidden"


class NotFound(BrokerError):
    status, code = 404, "not_found"


class MethodNotAllowed(BrokerError):
    status, code = 405, "method_not_allowed"


class RangeNotSatisfiable(BrokerError):
    status, code = 416, "range_not_satisfiable"

    def __init__(self, message: str, length: int) -> None:
        super().__init__(message, headers={"Content-Range": f"bytes */{length}"})


class StateConflict(BrokerError):
    status, code = 409, "conflict"


class AlreadyClaimed(StateConflict):
    code = "already_claimed"


class StaleEpoch(StateConflict):
    code = "stale_epoch"


class OffsetMismatch(StateConflict):
    code = "offset_mismatch"


class InputsIncomplete(StateConflict):
    code = "inputs_incomplete"


class InvalidState(StateConflict):
    code = "invalid_state"


class TooLarge(BrokerError):
    status, code = 413, "too_large"


class StorageFull(BrokerError):
    """The broker's disk (``[storage] data_dir``) has no room for an upload: retrying cannot
    help until its operator frees space, so clients are told at once."""

    status, code = 507, "storage_full"


class RateLimited(BrokerError):
    status, code = 429, "rate_limited"
    transient = True

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class Unavailable(BrokerError):
    status, code = 503, "unavailable"
    transient = True

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StoreError(Unavailable):
    """The database refused a read or write (busy beyond the timeout, disk full, corrupt)."""


# Werkzeug raises these itself (routing, method checks); they keep our JSON shape and codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    416: "range_not_satisfiable",
}


_HTTP_MESSAGES = {
    404: "no such endpoint; the API is described at /api/v1/openapi.json",
    405: "this endpoint does not take that method; see /api/v1/openapi.json",
}


def error_response(err: BrokerError) -> Response:
    response = jsonify(err.body())
    response.status_code = err.status
    for name, value in err.headers.items():
        response.headers[name] = value
    return response


def _handle_broker_error(err: BrokerError) -> Response:
    if err.status >= 500:
        log.warning("answered %d %s: %s", err.status, err.code, err.message)
    return error_response(err)


def _handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
    message = _HTTP_MESSAGES.get(status) or exc.description or exc.name
    err = BrokerError(message)
    err.status, err.code = status, code
    for name, value in exc.get_headers():
        if name.lower() != "content-type":  # keeps Allow (405) and Content-Range (416)
            err.headers[name] = value
    return error_response(err)


def _handle_unexpected(exc: Exception) -> Response:
    # The traceback goes to the server log only; the client learns nothing about internals.
    log.exception("internal error while answering a request")
    return error_response(BrokerError("internal error; the broker's log has the details"))


def init_app(app: Flask) -> None:
    """Answer every error, ours or werkzeug's or unexpected, as the contract's JSON."""
    app.register_error_handler(BrokerError, _handle_broker_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
