"""The PostgreSQL backend's connections: a pool, one write path and one read path.

Every write runs through ``Database.transaction()``: a pooled connection, one transaction
(READ COMMITTED; the shared SQL locks the rows it decides on through this module's
``DIALECT``: ``FOR UPDATE``, claims with ``FOR UPDATE SKIP LOCKED``, a claim's token
``FOR SHARE``), committed when the block ends, rolled back on any error. Reads run through
``snapshot()``: REPEATABLE READ, READ ONLY, so a job and its inputs are read as of one moment.
psycopg errors are converted to ``StoreError`` here and nowhere else.

This module knows no table (``sql_jobs``, ``sql_tokens``, ``sql_legacy``, ``postgres_schema``
have the SQL). It never builds SQL from data: the shared SQL's ``?`` marks become psycopg's
``%s`` parameters, nothing else. It never logs or shows a password: the database is named by
its URL without one (``locations.StoreLocation.shown``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from broker.errors import StoreError
from broker.store.sql_tx import Dialect, Tx

log = logging.getLogger(__name__)

# As SQLite's busy timeout: long enough to outlast another transaction's short write, short
# enough that a stuck database turns into a 503 the client retries rather than a hung request.
SET_LOCK_TIMEOUT = "SET lock_timeout = '10s'"
CONNECT_TIMEOUT_SECONDS = 10
# A request waits this long for a free pooled connection before it is answered 503.
POOL_TIMEOUT_SECONDS = 10.0

Connection = psycopg.Connection[DictRow]

DIALECT = Dialect(
    lock_job="SELECT * FROM jobs WHERE job_id = ? FOR UPDATE",
    next_lost="SELECT job_id FROM jobs WHERE site = ? AND state = ? AND agent_id = ?"
    " AND (agent_lost = 1 OR lease_expires < ?) ORDER BY queued_at, rowid LIMIT 1"
    " FOR UPDATE SKIP LOCKED",
    # Another instance's claim holding the oldest job makes this one take the next.
    next_queued="SELECT job_id FROM jobs WHERE site = ? AND state = ?"
    " AND (CAST(? AS TEXT) IS NULL"
    " OR command IN (SELECT jsonb_array_elements_text(CAST(? AS JSONB)))"
    " OR (CAST(? AS TEXT) IS NOT NULL"
    " AND command NOT IN (SELECT jsonb_array_elements_text(CAST(? AS JSONB)))))"
    " ORDER BY queued_at, rowid LIMIT 1 FOR UPDATE SKIP LOCKED",
    # In rowid order, so that two transactions locking several rows never wait on each other
    # in a circle.
    expired_claims="SELECT job_id, site, command, cancel_requested FROM jobs WHERE state = ?"
    " AND lease_expires < ? AND (CAST(? AS TEXT) IS NULL OR site = ?) ORDER BY rowid"
    " FOR UPDATE",
    lapsed_running="SELECT job_id, site FROM jobs WHERE state = ? AND agent_lost = 0"
    " AND lease_expires < ? ORDER BY rowid FOR UPDATE",
    waited_too_long="SELECT job_id FROM jobs WHERE (state = ? AND queued_at < ?)"
    " OR (state = ? AND updated_at < ?) ORDER BY rowid FOR UPDATE",
    lock_claimer="SELECT * FROM tokens WHERE token_id = ? FOR SHARE",
)


@functools.lru_cache(maxsize=512)
def _psycopg_sql(sql: str) -> str:
    """The shared SQL's ``?`` parameters as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresTx(Tx):
    def __init__(self, conn: Connection, *, writing: bool) -> None:
        super().__init__(DIALECT, writing=writing)
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[DictRow]:
        return self.conn.execute(_psycopg_sql(sql), tuple(params))


def _configure(conn: Connection) -> None:
    conn.execute(SET_LOCK_TIMEOUT)


class Database:
    """The pool of one ``PostgresStore`` and its one write path and one read path."""

    def __init__(
        self, conninfo: str, shown: str, *, password: str | None = None, pool_size: int = 10
    ) -> None:
        self.shown = shown
        self._conninfo = conninfo
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row,
                                  "connect_timeout": CONNECT_TIMEOUT_SECONDS}  # fmt: skip
        if password is not None:
            kwargs["password"] = password
        self._kwargs = kwargs
        # One connection first, outside the pool: its error says why (refused, no such
        # database, authentication), where the pool would only time out.
        try:
            psycopg.connect(conninfo, **kwargs).close()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the broker database {shown}: {exc}") from exc
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            conninfo,
            connection_class=Connection,
            kwargs=kwargs,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            configure=_configure,
            # A connection the server dropped (a restart) is replaced, not handed out.
            check=ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT_SECONDS,
            name="broker-store",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to the broker database {shown}: {exc}") from exc
        log.info("broker database: %s (pool of up to %d connections)", shown, pool_size)

    def close(self) -> None:
        self._pool.close()

    def connect(self) -> Connection:
        """A connection outside the pool (the change feed's LISTEN holds one for good)."""
        return psycopg.connect(self._conninfo, **self._kwargs)

    def ping(self, timeout: float) -> None:
        """One query on a pooled connection, waiting at most ``timeout`` s for one."""
        try:
            with self._pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1").fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"broker database unreachable: {exc}") from exc

    def transaction(self) -> contextlib.AbstractContextManager[Tx]:
        return self._session(writing=True)

    def snapshot(self) -> contextlib.AbstractContextManager[Tx]:
        return self._session(writing=False)

    @contextlib.contextmanager
    def _session(self, *, writing: bool) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                if not writing:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield PostgresTx(conn, writing=writing)
        except psycopg.Error as exc:
            what = "write" if writing else "read"
            # Not naming the database: this message may reach an API client (503).
            raise StoreError(f"broker database {what} failed: {exc}") from exc
