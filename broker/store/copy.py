"""``mint-bridge broker copy-store``: every row of one SQL store into another, either way
between SQLite and PostgreSQL, in one write transaction on the target.

Copied: tokens (hashes only, as stored), agents, jobs with their inputs, results, legacy
rows and timelines. Not copied: the web console's sessions (``NOT_COPIED``): an operator logs
in again on the target, whose own sessions are deleted. The row numbers the stores keep in
order (``jobs.rowid``, ``job_events.seq``) are not copied as such: rows go in their source
order and the target numbers them afresh, so the queue order and each timeline's order stay
the same. The target must be at this code's
schema version (PostgreSQL: ``migrate`` first) and empty, unless ``replace`` says to empty it
first. A failure rolls the whole copy back: the target is left as it was.

This module never builds SQL from data: table names are its own constants, and column names
are those both stores' schemas share, checked against that list before any SQL is written.
The file bytes are not here: they stay in ``[storage] data_dir``, which the target broker uses
as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.errors import StateConflict, StoreError
from broker.store.interface import Store
from broker.store.sql_store import SQLStore
from broker.store.sql_tx import Tx

# Parents before children (foreign keys), each with the order its rows are copied in.
TABLES: tuple[tuple[str, str], ...] = (
    ("tokens", "token_id"),
    ("agents", "site, agent_id"),
    ("jobs", "rowid"),
    ("inputs", "job_id, name"),
    ("results", "job_id, name"),
    ("legacy_jobs", "job_id"),
    ("job_events", "seq"),
)
# Kept by the store but not copied: sessions end with the store they were opened on.
NOT_COPIED: tuple[str, ...] = ("console_sessions",)
# The S608 notes below: every name in these statements is a constant of this module or a
# column name checked against _COLUMN and found in both schemas; values go as parameters.
_IDENTITY = {"jobs": "rowid", "job_events": "seq"}
_COLUMN = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class CopyReport:
    rows: dict[str, int]

    def line(self) -> str:
        return ", ".join(f"{n} {table}" for table, n in self.rows.items())


def _sql(store: Store, which: str) -> SQLStore:
    if not isinstance(store, SQLStore):
        raise StoreError(f"the {which} store is not a SQL store (sqlite:// or postgresql://)")
    return store


def _columns(tx: Tx, table: str) -> list[str]:
    cursor: Any = tx.execute(f"SELECT * FROM {table} WHERE 1 = 0")  # noqa: S608
    cursor.fetchall()
    names = [d[0] for d in cursor.description]
    identity = _IDENTITY.get(table)
    return [n for n in names if n != identity]


def _count(tx: Tx, table: str) -> int:
    row = tx.execute(f"SELECT COUNT(*) AS n FROM {table}").fetchone()  # noqa: S608
    return int(row[0] if isinstance(row, tuple) else row["n"])


def _shared_columns(source: Tx, target: Tx, table: str) -> list[str]:
    theirs, ours = _columns(source, table), _columns(target, table)
    if sorted(theirs) != sorted(ours):
        raise StateConflict(
            f"table {table} differs between the stores ({sorted(set(theirs) ^ set(ours))}); "
            "migrate both to this broker's schema first (`mint-bridge broker migrate`)"
        )
    for name in ours:
        if not _COLUMN.fullmatch(name):
            raise StoreError(f"table {table} has an unexpected column name {name!r:.70}")
    return ours


def _rows(source: Tx, table: str, columns: Sequence[str], order: str) -> list[tuple[Any, ...]]:
    listed = ", ".join(columns)
    cursor = source.execute(f"SELECT {listed} FROM {table} ORDER BY {order}")  # noqa: S608
    return [tuple(row[c] for c in columns) for row in cursor.fetchall()]


def copy_store(source: Store, target: Store, *, replace: bool = False) -> CopyReport:
    """Copy every row of ``source`` into ``target``; refused if the target holds any row,
    unless ``replace`` (then its rows are deleted first, in the same transaction)."""
    src, dst = _sql(source, "source"), _sql(target, "target")
    rows: dict[str, int] = {}
    with src.database.snapshot() as reading, dst.database.transaction() as writing:
        present = {t: _count(writing, t) for t, _ in TABLES}
        if any(present.values()) and not replace:
            held = ", ".join(f"{n} {t}" for t, n in present.items() if n)
            raise StateConflict(
                f"the target store is not empty ({held}); copy into a new, migrated store, "
                "or pass --replace to delete what it holds first"
            )
        for table in (*NOT_COPIED, *(t for t, _ in reversed(TABLES))):  # children first
            writing.execute(f"DELETE FROM {table}")  # noqa: S608
        for table, order in TABLES:
            columns = _shared_columns(reading, writing, table)
            marks = ", ".join("?" for _ in columns)
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
            copied = _rows(reading, table, columns, order)
            for values in copied:
                writing.execute(insert, values)
            rows[table] = len(copied)
    return CopyReport(rows)
