"""Who may see the console and change things through it: sessions, CSRF and page headers.

Every console request but the log-in page and the stylesheet needs a live session whose token
is still valid (a revoked or expired token ends its sessions at once). Sessions live in the
store (``broker.console.sessions``), so any instance on it answers for any of them. Every POST
must carry the session's CSRF token in its form (``csrf_token``); the log-in form, made before
there is a session, carries a random value that must equal the one in a short-lived cookie (a
double-submit check). Cookies are ``__Host-`` prefixed: ``Secure``, ``Path=/``, no domain,
``HttpOnly`` and ``SameSite=Strict``.

Admin tokens may change things (cancel a job, make and revoke tokens); operator tokens only
look. This module never keeps or logs a bearer token or a session id.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from broker import defaults
from broker.console.sessions import Session, SessionTable, live
from broker.errors import Forbidden
from broker.runtime import EXTENSION as BROKER
from broker.runtime import Broker, current
from broker.store import Scope

EXTENSION = "mint_broker_console"
SESSION_COOKIE = "__Host-mint_console"
LOGIN_COOKIE = "__Host-mint_console_login"
LOGIN_COOKIE_AGE = 600  # seconds to fill in the log-in form
CONSOLE_SCOPES = (Scope.ADMIN, Scope.OPERATOR)
# Endpoints open without a session.
OPEN_ENDPOINTS = {"console.login", "console.login_form", "console.static"}
# No script or style from anywhere but the broker, no framing, forms post only to the broker.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")  # fmt: skip

View = TypeVar("View", bound=Callable[..., Any])


def init_app(app: Flask) -> SessionTable:
    broker = app.extensions[BROKER]
    assert isinstance(broker, Broker)
    table = SessionTable(broker.store, defaults.CONSOLE_SESSION_IDLE, defaults.CONSOLE_SESSION_MAX)
    app.extensions[EXTENSION] = table
    return table


def sessions() -> SessionTable:
    table = current_app.extensions[EXTENSION]
    assert isinstance(table, SessionTable)
    return table


def session() -> Session:
    found = g.get("console_session")
    if not isinstance(found, Session):
        raise Forbidden("not logged in to the console")
    return found


def is_admin() -> bool:
    return session().scope is Scope.ADMIN


def admin_only(view: View) -> View:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not is_admin():
            raise Forbidden("this page needs an admin token; operator tokens only look")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def guard() -> BaseResponse | None:
    """The blueprint's ``before_request``: a live session, and its CSRF token on a POST."""
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    live = _live_session()
    if live is None:
        if request.method == "GET":
            return redirect(url_for("console.login_form", next=_next_path()), 303)
        raise Forbidden("your console session has ended; log in again and repeat the action")
    g.console_session = live
    if request.method == "POST" and not live.csrf_matches(request.form.get("csrf_token", "")):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
    return None


def _live_session() -> Session | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    broker = current()
    now = broker.clock()
    found = sessions().get(session_id, now)
    if found is None:
        return None
    # The token is read on every request: a revoke or an expiry on any instance, or by the
    # CLI, ends the session here at once.
    token = broker.store.get_token(found.token_id)
    if token is None or token.revoked or token.expired(now):
        sessions().close_token(found.token_id)
        return None
    return live(found, token.subject, now)


def _next_path() -> str:
    return request.full_path.rstrip("?")  # url_for quotes it as a query value


def safe_next(value: str | None) -> str:
    """Where to go after log-in: a console path only, never another site."""
    if value and value.startswith("/console/") and "//" not in value and "\\" not in value:
        return value
    return url_for("console.overview")


def login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_nonce_matches(presented: str) -> bool:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    return bool(expected) and hmac.compare_digest(expected.encode(), presented.encode())


def set_cookie(response: BaseResponse, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite="Strict")  # fmt: skip


def page_headers(response: BaseResponse) -> BaseResponse:
    """The blueprint's ``after_request``: no caching (a created token is shown once), no
    framing, no script or style from elsewhere."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
