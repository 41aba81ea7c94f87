"""SQL of the token records (``tokens``) for the SQLite store.

A row holds a token's public id, the SHA-256 of the whole token, its scope and subject, and
when it was made and revoked. Every function runs inside a transaction or snapshot that
``SQLiteStore`` opened.

This module never stores a token itself, only its hash, and never builds SQL from data (only
``?`` parameters).
"""

from __future__ import annotations

import sqlite3

from broker.store.records import Scope, TokenRecord
from broker.store.rules import token_exists
from broker.store.sqlite_db import Tx

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""


def create_schema(tx: Tx) -> None:
    tx.execute(SCHEMA)


def insert(tx: Tx, record: TokenRecord) -> None:
    if tx.execute("SELECT 1 FROM tokens WHERE token_id = ?", (record.token_id,)).fetchone():
        raise token_exists(record.token_id)
    tx.execute(
        "INSERT INTO tokens (token_id, sha256, scope, subject, created_at, revoked_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            record.token_id,
            record.sha256,
            record.scope.value,
            record.subject,
            record.created_at,
            record.revoked_at,
        ),
    )


def load(tx: Tx, token_id: str) -> TokenRecord | None:
    row = tx.execute("SELECT * FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
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


def _token(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        token_id=row["token_id"],
        sha256=row["sha256"],
        scope=Scope(row["scope"]),
        subject=row["subject"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
