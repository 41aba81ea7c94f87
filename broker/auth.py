"""Bearer tokens: their format, how they are made and checked, and who may do what.

A token is ``mbt_<id>_<secret>``: ``<id>`` (12 lowercase hex) is public and finds the record;
only SHA-256 of the whole token is stored, compared with ``hmac.compare_digest``. Scopes:
``client`` (creates jobs, reads/cancels/acks its own), ``site`` (acts as that site's agent),
``admin`` (every job and ``/api/v1/admin``), ``operator`` (read-only: ``/metrics``; named, e.g.
``prometheus``, so each scraper has a token of its own to revoke).

This module never logs a token, never stores one, and never accepts one anywhere but the
``Authorization`` header: a token in a query string would land in access logs and proxies.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from flask import g, has_request_context, request

from broker.errors import BadRequest, BrokerError, Forbidden, InvalidField, Unauthorized
from broker.store import Scope, Store, TokenRecord
from broker.store.rules import token_expired, token_revoked, unknown_token

TOKEN_PREFIX = "mbt_"  # noqa: S105 - a prefix, not a secret
_TOKEN = re.compile(r"mbt_([0-9a-f]{12})_([A-Za-z0-9_-]{32,128})")
# Site and client names: they appear in paths of logs and in messages, so keep them plain.
SUBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ADMIN_SUBJECT = "admin"
# Query parameters some HTTP clients use for tokens; refused loudly instead of ignored.
_TOKEN_QUERY_NAMES = ("access_token", "token", "auth", "authorization")
# How stale ``TokenRecord.last_used`` may get: a token is used by every request of a long
# poll loop, and a write per request would cost more than the answer to "when was it used".
LAST_USED_STEP = 60.0
# Compared against when the token id is unknown, so both paths do the same work.
_DUMMY_HASH = hashlib.sha256(b"mint-bridge unknown token").hexdigest()


@dataclass(frozen=True)
class Principal:
    token_id: str
    scope: Scope
    subject: str

    def __str__(self) -> str:
        return f"{self.scope}:{self.subject} (token {self.token_id})"


def refused(reason: str, error: BrokerError) -> BrokerError:
    """``error``, with why it refused a request noted for ``/metrics``
    (``auth_failures_total{reason}``); ``reason`` is one of a few fixed words, never the token."""
    if has_request_context():
        g.auth_failure = reason
    return error


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_token(token: str) -> str:
    """The token's public id; Unauthorized if the text is not a token at all."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise refused("malformed", Unauthorized(
            "the bearer token is malformed; tokens look like mbt_<id>_<secret>"))
    return match.group(1)


def check_subject(scope: Scope, subject: str) -> str:
    if scope is Scope.ADMIN:
        return ADMIN_SUBJECT
    if not SUBJECT_NAME.fullmatch(subject):
        raise InvalidField(
            f"{scope} name {subject!r:.80} must be 1-64 letters, digits, '.', '_' or '-'",
            field="subject",
        )
    return subject


def new_token(
    scope: Scope, subject: str, now: float, expires_at: float | None = None
) -> tuple[str, TokenRecord]:
    """A fresh token (shown once) and the record to store (its hash only)."""
    if expires_at is not None and expires_at <= now:
        raise InvalidField("expires must be in the future", field="expires")
    token_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    record = TokenRecord(token_id, hash_token(token), scope, check_subject(scope, subject), now,
                         expires_at=expires_at)  # fmt: skip
    return token, record


def verify(store: Store, token: str, now: float | None = None) -> Principal:
    """The token's principal; with ``now``, its last use is recorded (to ``LAST_USED_STEP``)."""
    token_id = parse_token(token)
    record = store.get_token(token_id)
    expected = record.sha256 if record is not None else _DUMMY_HASH
    matches = hmac.compare_digest(expected, hash_token(token))
    if record is None or not matches:
        raise refused("unknown", unknown_token())
    if record.revoked:
        raise refused("revoked", token_revoked(token_id))
    if record.expires_at is not None and record.expired(time.time() if now is None else now):
        raise refused("expired", token_expired(token_id, record.expires_at))
    if now is not None and (record.last_used is None or now - record.last_used >= LAST_USED_STEP):
        store.token_used(token_id, now)
    return Principal(record.token_id, record.scope, record.subject)


def bearer_token() -> str:
    """The token of the current request, from the Authorization header only."""
    if any(name in request.args for name in _TOKEN_QUERY_NAMES):
        raise refused("token_in_url", BadRequest(
            "tokens are accepted only in the Authorization header, never in the URL; "
            "revoke a token that was sent in a URL"
        ))
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise refused("missing", Unauthorized(
            "no Authorization header; send Authorization: Bearer <token>"))
    if scheme.lower() != "bearer" or not token.strip():
        raise refused("not_bearer", Unauthorized("the Authorization header must be Bearer <token>"))
    return token.strip()


def require(
    get_store: Callable[[], Store],
    scopes: Collection[Scope],
    get_now: Callable[[], float] = time.time,
) -> Callable[[], None]:
    """A ``before_request`` hook: authenticate, then admit only ``scopes`` to this area."""

    def hook() -> None:
        principal = verify(get_store(), bearer_token(), get_now())
        g.principal = principal  # known caller, even if refused here (see drain_after_error)
        if principal.scope not in scopes:
            allowed = " or ".join(sorted(s.value for s in scopes))
            raise refused("wrong_scope", Forbidden(
                f"this API area takes {allowed} tokens, not {principal.scope} tokens"))

    return hook


def current() -> Principal:
    principal = g.get("principal")
    if not isinstance(principal, Principal):
        raise Unauthorized("request was not authenticated")
    return principal
