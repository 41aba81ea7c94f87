"""The SQLite backend's connection: one file, WAL mode, one writer at a time.

Every write runs through ``Database.transaction()``: a process-wide lock plus
``BEGIN IMMEDIATE`` (so a second process, such as ``broker token create``, waits instead of
failing half-way), rollback on any error, and sqlite3 errors converted to ``StoreError`` there.
Reads run through ``snapshot()`` under the same lock, so a job and its inputs are read
consistently. Change notifications go out only after a commit, never for a rolled-back write.

This module knows no table: the SQL lives in ``sqlite_jobs``, ``sqlite_tokens`` and
``sqlite_legacy``, which run inside the ``Tx`` handed out here and never open, commit or roll
back one themselves.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from broker.errors import StoreError
from broker.store.interface import ChangeListener

# Long enough to outlast another process's short write (token create), short enough that a
# stuck database turns into a 503 the client retries rather than a hung request.
BUSY_TIMEOUT_SECONDS = 10.0


class Tx:
    """One open transaction; remembers which jobs and sites changed, for notification."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.jobs: set[str] = set()
        self.sites: set[str] = set()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def touch(self, job_id: str, site: str | None = None) -> None:
        self.jobs.add(job_id)
        if site is not None:
            self.sites.add(site)


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
    def transaction(self, listener: ChangeListener | None) -> Iterator[Tx]:
        with self._lock:
            tx = Tx(self._conn)
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
        if listener is not None and (tx.jobs or tx.sites):
            listener(tx.jobs, tx.sites)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Tx]:
        with self._lock:
            self._execute_control("BEGIN")
            try:
                yield Tx(self._conn)
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
