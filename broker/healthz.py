"""``GET /healthz``: whether this broker instance can serve, for a load balancer's checks.

No token (HAProxy and systemd checks have none) and a tiny answer: 200 when the store answers
a query and the byte store takes a probe write, else 503 naming which of the two failed. It
tells only "ok" or "unreachable": never the database's address, a path or an error text (those
go to this instance's log). A check never waits long: the store gets a short timeout, so a
database that hangs turns into a 503 before the load balancer's own check times out.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from broker.errors import StoreError
from broker.runtime import current

log = logging.getLogger(__name__)

bp = Blueprint("healthz", __name__)

OK = "ok"
UNREACHABLE = "unreachable"


def _store() -> str:
    try:
        current().store.ping()
    except StoreError as exc:
        log.warning("healthz: the store is unreachable: %s", exc)
        return UNREACHABLE
    return OK


def _byte_store() -> str:
    try:
        current().files.check()
    except StoreError as exc:
        log.warning("healthz: the byte store is unreachable: %s", exc)
        return UNREACHABLE
    return OK


@bp.get("/healthz")
def healthz() -> Response:
    parts = {"store": _store(), "byte_store": _byte_store()}
    failed = [name for name, state in parts.items() if state != OK]
    body = {"status": "unavailable" if failed else OK, **parts}
    response = jsonify(body)
    response.status_code = 503 if failed else 200
    response.headers["Cache-Control"] = "no-store"
    return response
