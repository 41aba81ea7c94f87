"""Schema versions of the SQL backends: the ``schema_version`` table and the migration steps.

Each backend lists its ``Migration`` steps (``sqlite_schema``, ``postgres_schema``), numbered
from 1 in order; the same number means the same tables on both. A step only one engine needs
is left out of the other's list (PostgreSQL's step 4, poll_slots, has no SQLite step): a gap
is skipped, never filled later. ``schema_version`` holds
one row per step applied. ``pending`` says which steps a database still needs and refuses a
database newer than this code, which an older broker must never write to.

This module never decides when to migrate: SQLite migrates as it opens, PostgreSQL only when
``mint-bridge broker migrate`` asks (``require_current`` refuses to serve before).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from broker.errors import StoreError
from broker.store.sql_tx import Tx

log = logging.getLogger(__name__)

VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY,"
    " summary TEXT NOT NULL,"
    " applied_at DOUBLE PRECISION NOT NULL)"
)


class SchemaMismatch(StoreError):
    """The database's schema is not the one this broker was built for."""


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    statements: tuple[str, ...]


def latest(migrations: Sequence[Migration]) -> int:
    return migrations[-1].version if migrations else 0


def recorded_version(tx: Tx) -> int:
    """The highest step applied (0: none); ``schema_version`` must exist."""
    row = tx.execute("SELECT MAX(version) AS version FROM schema_version").fetchone()
    return int(row["version"] or 0) if row is not None else 0


def pending(found: int, migrations: Sequence[Migration], where: str) -> list[Migration]:
    code = latest(migrations)
    if found > code:
        raise SchemaMismatch(
            f"{where} has schema version {found}, newer than this broker's ({code}); upgrade"
            " mint-bridge to a release that knows it (an older broker must not write to it)"
        )
    return [step for step in migrations if step.version > found]


def apply(tx: Tx, steps: Sequence[Migration], now: float, where: str) -> None:
    for step in steps:
        for statement in step.statements:
            tx.execute(statement)
        tx.execute(
            "INSERT INTO schema_version (version, summary, applied_at) VALUES (?, ?, ?)",
            (step.version, step.summary, now),
        )
        log.info("%s: applied schema step %d (%s)", where, step.version, step.summary)


def require_current(found: int, migrations: Sequence[Migration], where: str, fix: str) -> None:
    """Refuse to serve on a database that is newer, or not yet migrated to this code."""
    steps = pending(found, migrations, where)
    if steps:
        state = "has no broker schema yet" if found == 0 else f"has schema version {found}"
        raise SchemaMismatch(
            f"{where} {state}; this broker needs version {latest(migrations)}: run {fix}"
        )
