"""SQL of the web console's sessions (``console_sessions``) for the SQL backends.

A row holds the SHA-256 of a session id (never the id), the token it was opened with, the
scope, the session's CSRF secret and when it was made, last used and ends. Every function runs
inside a transaction or snapshot that ``SQLStore`` opened; the table is made by each backend's
schema step 5.

This module never builds SQL from data (only ``?`` parameters).
"""

from __future__ import annotations

from broker.store.records import Scope, SessionRecord
from broker.store.rules import session_exists
from broker.store.sql_tx import Row, Tx


def insert(tx: Tx, record: SessionRecord, limit: int) -> None:
    cursor = tx.execute(
        "INSERT INTO console_sessions (session_hash, token_id, scope, csrf, created_at,"
        " used_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_hash) DO NOTHING",
        (record.session_hash, record.token_id, record.scope.value, record.csrf,
         record.created_at, record.used_at, record.expires_at),
    )  # fmt: skip
    if cursor.rowcount != 1:
        raise session_exists()
    _trim(tx, limit)


def _trim(tx: Tx, limit: int) -> None:
    """Delete the oldest rows beyond ``limit`` (oldest by log-in, then by hash)."""
    row = tx.execute("SELECT COUNT(*) AS n FROM console_sessions").fetchone()
    over = int(row["n"]) - limit
    if over > 0:
        tx.execute(
            "DELETE FROM console_sessions WHERE session_hash IN (SELECT session_hash FROM"
            " console_sessions ORDER BY created_at, session_hash LIMIT ?)",
            (over,),
        )


def load(tx: Tx, session_hash: str) -> SessionRecord | None:
    row = tx.execute("SELECT * FROM console_sessions WHERE session_hash = ?",
                     (session_hash,)).fetchone()  # fmt: skip
    return _session(row) if row is not None else None


def touch(tx: Tx, session_hash: str, now: float) -> None:
    tx.execute("UPDATE console_sessions SET used_at = ? WHERE session_hash = ?",
               (now, session_hash))  # fmt: skip


def delete(tx: Tx, session_hash: str) -> bool:
    cursor = tx.execute("DELETE FROM console_sessions WHERE session_hash = ?", (session_hash,))
    return cursor.rowcount == 1


def delete_of_token(tx: Tx, token_id: str) -> int:
    cursor = tx.execute("DELETE FROM console_sessions WHERE token_id = ?", (token_id,))
    return int(cursor.rowcount)


def delete_ended(tx: Tx, now: float, idle: float) -> int:
    # The same test as SessionRecord.ended, as SQL: lifetime over, or idle too long.
    cursor = tx.execute(
        "DELETE FROM console_sessions WHERE expires_at <= ? OR used_at <= ?", (now, now - idle)
    )
    return int(cursor.rowcount)


def _session(row: Row) -> SessionRecord:
    return SessionRecord(
        session_hash=row["session_hash"],
        token_id=row["token_id"],
        scope=Scope(row["scope"]),
        csrf=row["csrf"],
        created_at=row["created_at"],
        used_at=row["used_at"],
        expires_at=row["expires_at"],
    )
