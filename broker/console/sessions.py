"""The console's log-in sessions, kept in the broker's store so every instance sees them.

An operator logs in with an admin or operator token once; the browser then holds only a random
session id in a cookie. The store keeps the SHA-256 of each id (a copy of the database shows no
usable cookie), the token's id (so a revoked or expired token ends its sessions at the next
request, on whichever instance it lands), the scope, and a CSRF secret per session
(``broker.store.SessionRecord``). Behind a load balancer a session opened on one instance is
live on all of them, a log-out on one ends it on all, and a restart logs nobody out.

A session ends when unused for ``idle`` seconds, ``lifetime`` seconds after its log-in, or at
log-out; housekeeping deletes the rows of ended ones. Its last use is written at most once a
``TOUCH_STEP`` (a write per page view would cost more than the answer is worth), so a session
may end up to that much before ``idle`` has passed since its very last request.

Why the CSRF secret is a random value in the row, not derived from a server secret and the
session id: a server secret would have to be the same on every instance, one more secret to
hand out, keep in step and rotate; the row is already shared, so every instance knows the
secret as soon as it knows the session, and the secret ends with it. Someone who reads the
database learns the CSRF secret but not the session id (only its hash is kept), and the secret
alone makes no request count as the operator's.

This module never keeps a bearer token and never a session id in clear, and never logs either.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from broker.store import Scope, SessionRecord, Store

# Above this many kept sessions the oldest is dropped: a flood of log-ins cannot grow the table.
MAX_SESSIONS = 10_000
# How stale a session's last use may get in the store (seconds): well below any idle timeout.
TOUCH_STEP = 60.0


@dataclass(frozen=True)
class Session:
    """A live session as a request sees it; ``subject`` is read from its token each time."""

    token_id: str
    scope: Scope
    subject: str
    csrf: str
    created_at: float
    used_at: float

    def csrf_matches(self, presented: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), presented.encode())


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionTable:
    """The console's sessions in ``store``, ended by the times given; every method takes the
    time, so tests drive expiry without sleeping."""

    def __init__(self, store: Store, idle: float, lifetime: float) -> None:
        self.store = store
        self.idle = idle
        self.lifetime = lifetime

    def open(self, token_id: str, scope: Scope, now: float) -> tuple[str, SessionRecord]:
        """A new session id (for the cookie only) and the session kept for it."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        record = SessionRecord(session_hash(session_id), token_id, scope, csrf, now, now,
                               now + self.lifetime)  # fmt: skip
        self.store.create_session(record, MAX_SESSIONS)
        return session_id, record

    def get(self, session_id: str, now: float) -> SessionRecord | None:
        """The live session, its use recorded; None if unknown or ended (then deleted)."""
        key = session_hash(session_id)
        record = self.store.get_session(key)
        if record is None:
            return None
        if record.ended(now, self.idle):
            self.store.delete_session(key)
            return None
        if now - record.used_at >= TOUCH_STEP:
            self.store.touch_session(key, now)
        return record

    def close(self, session_id: str) -> bool:
        return self.store.delete_session(session_hash(session_id))

    def close_token(self, token_id: str) -> int:
        """End every session opened with ``token_id`` (it was revoked); how many ended."""
        return self.store.delete_token_sessions(token_id)

    def remove_ended(self, now: float) -> int:
        """Delete the rows of sessions ended by ``now`` (housekeeping)."""
        return self.store.delete_ended_sessions(now, self.idle)


def live(record: SessionRecord, subject: str, now: float) -> Session:
    return Session(record.token_id, record.scope, subject, record.csrf, record.created_at, now)
