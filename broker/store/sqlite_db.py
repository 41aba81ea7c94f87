"""The SQLite backend's connection: one file, WAL mode, one writer at a time.

Every write runs through ``Database.transaction()``: a process-wide lock plus
``BEGIN IMMEDIATE`` (so a second process, such as ``broker token create``, waits instead of
failing half-way), rollback on any error, and sqlite3 errors converted to ``StoreError`` there.
Reads run through ``snapshot()`` under the same lock, so a job and its inputs are read
consistently. With one writer at a time, SQLite's ``Dialect`` needs no lock clauses.

This module knows no table: the SQL lives in ``sql_jobs``, ``sql_tokens`` and ``sql_legacy``
(shared with PostgreSQL) and the tables in ``sqlite_schema``; they run inside the ``Tx``
handed out here and never open, commit or roll back one themselves.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from broker.errors import StoreError
from broker.store.sql_tx import Dialect, Tx

# Long enough to outlast another process's short write (token create), short enough that a
# stuck database turns into a 503 the client retries rather than a hung request.
BUSY_TIMEOUT_SECONDS = 10.0


DIALECT = Dialect(
    lock_job="SELECT * FROM jobs WHERE job_id = ?",
    next_lost="SELECT job_id FROM jobs WHERE site = ? AND state = ? AND agent_id = ?"
    " AND (agent_lost = 1 OR lease_expires < ?) ORDER BY queued_at, rowid LIMIT 1",
    next_queued="SELECT job_id FROM jobs WHERE site = ? AND state = ?"
    " AND (? IS NULL OR command IN (SELECT value FROM json_each(?))"
    " OR (? IS NOT NULL AND command NOT IN (SELECT value FROM json_each(?))))"
    " ORDER BY queued_at, rowid LIMIT 1",
    expired_claims="SELECT job_id, site, command, cancel_requested FROM jobs WHERE state = ?"
    " AND lease_expires < ? AND (? IS NULL OR site = ?)",
    lapsed_running="SELECT job_id, site FROM jobs WHERE state = ? AND agent_lost = 0"
    " AND lease_expires < ?",
    waited_too_long="SELECT job_id FROM jobs WHERE (state = ? AND queued_at < ?)"
    " OR (state = ? AND updated_at < ?)",
    lock_claimer="SELECT * FROM tokens WHERE token_id = ?",
)


class SQLiteTx(Tx):
    def __init__(self, conn: sqlite3.Connection, *, writing: bool) -> None:
        super().__init__(DIALECT, writing=writing)
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)


class Database:
    """The connection of one ``SQLiteStore`` and its one write path and one read path."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Reads and writes of all threads go through this one connection, one at a time.
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            # FULL: a write the API acknowledged (log bytes, upload offsets) survives power loss.
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
                self._conn.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the broker database {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            tx = SQLiteTx(self._conn, writing=True)
            self._execute_control("BEGIN IMMEDIATE")
            try:
                yield tx
                self._execute_control("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"broker database write failed: {exc}") from exc
                raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Tx]:
        with self._lock:
            self._execute_control("BEGIN")
            try:
                yield SQLiteTx(self._conn, writing=False)
            except sqlite3.Error as exc:
                raise StoreError(f"broker database read failed: {exc}") from exc
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("COMMIT")

    def _execute_control(self, statement: str) -> None:
        try:
            self._conn.execute(statement)
        except sqlite3.Error as exc:
            raise StoreError(f"broker database is unavailable ({statement}): {exc}") from exc
