"""Log-in and log-out: an admin or operator token exchanged for a session cookie.

The token arrives in the form body of a POST (never in a URL), is checked like any bearer
token (``broker.auth.verify``: hash compared in constant time, revoked and expired refused)
and is forgotten at once; the browser keeps only the session cookie. Client and site tokens
are refused: they belong to programs, not to people looking at the broker.
"""

from __future__ import annotations

import logging

from flask import Response, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from broker import auth
from broker.console import access
from broker.console.blueprint import bp
from broker.errors import BrokerError, Forbidden
from broker.runtime import current

log = logging.getLogger(__name__)

_WRONG_SCOPE = (
    "a {scope} token does not open the console; log in with an admin token or a read-only "
    "operator token (mint-bridge broker token create --operator NAME)"
)


def _form(error: str | None = None, status: int = 200) -> Response:
    nonce = access.login_nonce()
    page = render_template("login.html", nonce=nonce, error=error,
                           next=access.safe_next(request.args.get("next")))  # fmt: skip
    response = Response(page, status, mimetype="text/html")
    access.set_cookie(response, access.LOGIN_COOKIE, nonce, access.LOGIN_COOKIE_AGE)
    return response


@bp.get("/login")
def login_form() -> Response:
    return _form()


@bp.post("/login")
def login() -> BaseResponse:
    if not access.login_nonce_matches(request.form.get("csrf_token", "")):
        return _form("the log-in form had expired or came from elsewhere; log in again", 403)
    broker = current()
    now = broker.clock()
    try:
        principal = auth.verify(broker.store, request.form.get("token", "").strip(), now)
        if principal.scope not in access.CONSOLE_SCOPES:
            raise auth.refused("wrong_scope", Forbidden(_WRONG_SCOPE.format(scope=principal.scope)))
    except BrokerError as exc:
        log.info("console: log-in refused (%s)", exc.code)
        return _form(exc.message, exc.status)
    session_id, _ = access.sessions().open(principal.token_id, principal.scope, now)
    log.info("console: %s logged in", principal)
    response = _redirect(access.safe_next(request.form.get("next")))
    access.set_cookie(response, access.SESSION_COOKIE, session_id, None)
    response.delete_cookie(access.LOGIN_COOKIE, path="/", secure=True, httponly=True,
                           samesite="Strict")  # fmt: skip
    return response


@bp.post("/logout")
def logout() -> BaseResponse:
    session_id = request.cookies.get(access.SESSION_COOKIE, "")
    access.sessions().close(session_id)
    log.info("console: %s:%s logged out", access.session().scope, access.session().subject)
    response = _redirect(url_for("console.login_form"))
    response.delete_cookie(access.SESSION_COOKIE, path="/", secure=True, httponly=True,
                           samesite="Strict")  # fmt: skip
    return response


def _redirect(location: str) -> BaseResponse:
    response = Response(status=303)
    response.headers["Location"] = location
    return response
