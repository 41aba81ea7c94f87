"""The console's tokens page (admins only): list, create, revoke, and when each was last used.

A created token is shown once, on the answer to the form's POST (never stored, never in a
URL, the page not cached); only its hash is kept, as with ``mint-bridge broker token create``.
Revoking a token also ends every console session opened with it.
"""

from __future__ import annotations

import logging

from flask import render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from broker import token_expiry
from broker.auth import new_token
from broker.console import access
from broker.console.blueprint import bp
from broker.errors import InvalidField, NotFound
from broker.runtime import current
from broker.store import Scope

log = logging.getLogger(__name__)


@bp.get("/tokens")
@access.admin_only
def tokens() -> str:
    broker = current()
    now = broker.clock()
    records = sorted(broker.store.list_tokens(), key=lambda t: t.created_at, reverse=True)
    rows = [(record, *token_expiry.describe(record, now)) for record in records]
    return render_template("tokens.html", page="tokens", rows=rows,
                           scopes=[s.value for s in Scope])  # fmt: skip


def _scope(value: str) -> Scope:
    try:
        return Scope(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Scope)
        raise InvalidField(f"scope must be one of {allowed}", field="scope") from None


def _expires(value: str, now: float) -> float | None:
    if not value.strip():
        return None
    try:
        return token_expiry.parse_expires(value, now)
    except ValueError as exc:
        raise InvalidField(f"expires: {exc}", field="expires") from None


@bp.post("/tokens")
@access.admin_only
def create_token() -> str:
    broker = current()
    now = broker.clock()
    scope = _scope(request.form.get("scope", ""))
    subject = request.form.get("subject", "").strip()
    if scope is not Scope.ADMIN and not subject:
        raise InvalidField(f"a {scope} token needs a name (the {scope}'s name)", field="subject")
    token, record = new_token(scope, subject, now, _expires(request.form.get("expires", ""), now))
    broker.store.create_token(record)
    who = access.session()
    log.info("console: token %s for %s %s created by %s:%s", record.token_id, scope,
             record.subject, who.scope, who.subject)  # fmt: skip
    return render_template("token_created.html", page="tokens", token=token, record=record)


@bp.post("/tokens/<token_id>/revoke")
@access.admin_only
def revoke_token(token_id: str) -> BaseResponse:
    broker = current()
    if broker.store.get_token(token_id) is None:
        raise NotFound(f"no token {token_id!r:.20}")
    if broker.store.revoke_token(token_id, broker.clock()):
        ended = access.sessions().close_token(token_id)
        who = access.session()
        log.info("console: token %s revoked by %s:%s (%d console sessions ended)", token_id,
                 who.scope, who.subject, ended)  # fmt: skip
    response = BaseResponse(status=303)
    response.headers["Location"] = url_for("console.tokens")
    return response
