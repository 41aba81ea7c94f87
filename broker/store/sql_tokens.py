"""SQL of the token records (``tokens``) for the SQL backends (SQLite, PostgreSQL).

A row holds a token's public id, the SHA-256 of the whole token, its scope and subject, and
when it was made, revoked and expires. Every function runs inside a transaction or snapshot that
``SQLStore`` opened; the table is made by each backend's schema module.

This module never stores a token itself, only its hash, and never builds SQL from data (only
``?`` parameters).
"""

from __future__ import annotations

from broker.store.records import Scope, TokenRecord
from broker.store.rules import token_exists
from broker.store.sql_tx import Row, Tx


def insert(tx: Tx, record: TokenRecord) -> None:
    cursor = tx.execute(
        "INSERT INTO tokens (token_id, sha256, scope, subject, created_at, revoked_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (token_id) DO NOTHING",
        (
            record.token_id,
            record.sha256,
            record.scope.value,
            record.subject,
            record.created_at,
            record.revoked_at,
            record.expires_at,
        ),
    )
    if cursor.rowcount != 1:
        raise token_exists(record.token_id)


def load(tx: Tx, token_id: str) -> TokenRecord | None:
    row = tx.execute("SELECT * FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
    return _token(row) if row is not None else None


def load_for_claim(tx: Tx, token_id: str) -> TokenRecord | None:
    """The token of a claim, held until the claim commits: a revoke waits or was seen."""
    row = tx.execute(tx.dialect.lock_claimer, (token_id,)).fetchone()
    return _token(row) if row is not None else None


def load_all(tx: Tx) -> list[TokenRecord]:
    rows = tx.execute("SELECT * FROM tokens ORDER BY created_at, token_id").fetchall()
    return [_token(row) for row in rows]


def revoke(tx: Tx, token_id: str, now: float) -> bool:
    cursor = tx.execute(
        "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
        (now, token_id),
    )
    return cursor.rowcount == 1


def _token(row: Row) -> TokenRecord:
    return TokenRecord(
        token_id=row["token_id"],
        sha256=row["sha256"],
        scope=Scope(row["scope"]),
        subject=row["subject"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        expires_at=row["expires_at"],
        last_used=row["last_used"],
    )
