"""The console's log-in sessions, kept server-side in this broker process.

An operator logs in with an admin or operator token once; the browser then holds only a random
session id in a cookie. The table keeps the SHA-256 of each id (a memory dump shows no usable
cookie), the token's id (so a revoked or expired token ends its sessions at the next request),
the scope, and a CSRF secret per session. A session ends when unused for ``idle`` seconds,
``lifetime`` seconds after its log-in, or at log-out. The broker runs in one process (see
``broker.notify``), so an in-process table is every session there is; a restart logs everyone
out, which is the safe direction.

This module never keeps a bearer token and never a session id in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, replace

from broker.store import Scope

# Above this many live sessions the oldest is dropped: a flood of log-ins cannot grow memory.
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    token_id: str
    scope: Scope
    subject: str
    csrf: str
    created_at: float
    used_at: float

    def csrf_matches(self, presented: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), presented.encode())


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionTable:
    """Thread-safe; every method takes the time, so tests drive expiry without sleeping."""

    def __init__(self, idle: float, lifetime: float) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def open(self, token_id: str, scope: Scope, subject: str, now: float) -> tuple[str, Session]:
        """A new session id (for the cookie only) and its session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(token_id, scope, subject, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._drop_expired(now)
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].created_at)
                del self._sessions[oldest]
            self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str, now: float) -> Session | None:
        """The live session, its idle clock restarted; None if unknown or expired."""
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[key]
                return None
            session = replace(session, used_at=now)
            self._sessions[key] = session
            return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(_key(session_id), None)

    def close_token(self, token_id: str) -> int:
        """End every session opened with ``token_id`` (it was revoked); how many ended."""
        with self._lock:
            keys = [k for k, s in self._sessions.items() if s.token_id == token_id]
            for key in keys:
                del self._sessions[key]
        return len(keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.used_at >= self.idle or now - session.created_at >= self.lifetime

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]
