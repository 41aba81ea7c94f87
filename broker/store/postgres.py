"""The PostgreSQL backend of ``broker.store.Store``: a database several processes can share.

``PostgresStore`` opens a connection pool (``postgres_db``), refuses to serve on a database
whose schema is not this code's (``postgres_schema``: not migrated yet, or newer) and runs the
shared ``SQLStore`` over it, with the same semantics as SQLite and memory. Its schema changes
only through ``migrate`` (``mint-bridge broker migrate``), never as a side effect of serving.

Imported only when a config names a ``postgresql://`` store: the embedded default never loads
psycopg. This module never builds SQL from data, never stores a token and never logs a
password (the database is named by ``StoreLocation.shown``).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

from broker.store import postgres_schema, postgres_slots
from broker.store.interface import ChangeListener
from broker.store.locations import StoreLocation, read_password
from broker.store.postgres_db import Database
from broker.store.postgres_notify import ChangeFeed, publish
from broker.store.sql_store import SQLStore
from broker.store.sql_tx import Tx

MIGRATE_HINT = "`mint-bridge broker migrate --config broker.toml`"
# /healthz waits this long for a pooled connection: below a load balancer's check timeout.
PING_TIMEOUT_SECONDS = 2.0


def _database(location: StoreLocation, pool_size: int) -> Database:
    return Database(location.url, location.shown, password=read_password(location),
                    pool_size=pool_size)  # fmt: skip


class PostgresStore(SQLStore):
    def __init__(
        self,
        location: StoreLocation,
        listener: ChangeListener | None = None,
        *,
        pool_size: int = 10,
        resync: Callable[[], None] | None = None,
    ) -> None:
        self.location = location
        database = _database(location, pool_size)
        self._database = database
        # Marks this instance's notifications, so its feed drops them (told locally already).
        self._origin = uuid.uuid4().hex
        super().__init__(database, listener)
        try:
            with database.snapshot() as tx:
                postgres_schema.check(tx, self._where(location), MIGRATE_HINT)
        except BaseException:
            database.close()
            raise
        self._feed: ChangeFeed | None = None
        if listener is not None:
            self._feed = ChangeFeed(database.connect, self._origin, listener, resync,
                                    location.shown)  # fmt: skip
            self._feed.start()

    @contextlib.contextmanager
    def _transaction(self, operation: str = "other") -> Iterator[Tx]:
        with self.transaction_times.measure(operation, "write"), self._db.transaction() as tx:
            yield tx
            if tx.jobs or tx.sites:  # delivered by PostgreSQL only if the commit succeeds
                publish(tx, self._origin, tx.jobs, tx.sites)
        self._changed(tx)

    def hold_poll(self, poll_id: str, token_id: str, limit: int, until: float, now: float) -> bool:
        with self._db.transaction() as tx:  # no change to tell: nobody waits on a slot
            return postgres_slots.hold(tx, poll_id, token_id, limit, until, now)

    def end_poll(self, poll_id: str) -> None:
        with self._db.transaction() as tx:
            postgres_slots.end(tx, poll_id)

    def polls_held(self, token_id: str, now: float) -> int:
        with self._db.snapshot() as tx:
            return postgres_slots.held(tx, token_id, now)

    def close(self) -> None:
        if self._feed is not None:
            self._feed.stop()
        super().close()

    @property
    def feed(self) -> ChangeFeed | None:
        return self._feed

    def ping(self) -> None:
        self._database.ping(PING_TIMEOUT_SECONDS)

    @staticmethod
    def _where(location: StoreLocation) -> str:
        return f"the broker database {location.shown}"

    @classmethod
    def migrate(cls, location: StoreLocation) -> tuple[int, int]:
        """Apply the schema steps this database lacks: (version before, version after)."""
        database = _database(location, 1)
        try:
            with database.transaction() as tx:
                return postgres_schema.migrate(tx, time.time(), cls._where(location))
        finally:
            database.close()
