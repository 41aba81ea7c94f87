"""What the broker keeps about jobs, uploads, leases and tokens: the storage contract and its
backends.

- ``records``: the frozen records a store keeps and returns (``JobRecord``, ``NewJob``, ...);
- ``interface``: ``Store``, the contract every backend implements;
- ``rules``: the checks and outcomes every backend applies the same way;
- ``sql_store`` (with ``sql_tx``, ``sql_jobs``, ``sql_tokens``, ``sql_sessions``,
  ``sql_legacy``): the contract carried out once for the SQL backends, in the SQL they share;
- ``migrations``: the ``schema_version`` table and the steps of each SQL backend;
- ``sqlite`` (with ``sqlite_db``, ``sqlite_schema``): the SQLite backend, the embedded default;
- ``postgres`` (with ``postgres_db``, ``postgres_schema``): the PostgreSQL backend (psycopg 3
  and its pool, imported only when a config names it);
- ``locations``: the ``[storage] store`` URL, and opening or migrating the store it names;
- ``memory`` (with ``memory_tables``): a backend in one process's memory, the contract's
  reference for tests.

The names importers need are re-exported here (``from broker.store import Store, State``);
the backends are imported from their own modules (``broker.store.sqlite.SQLiteStore``), so the
contract depends on none of them.
"""

from __future__ import annotations

from broker.store.interface import ChangeListener, Store
from broker.store.records import (
    LOG_STREAMS,
    AgentSeen,
    Claim,
    ExpiryReport,
    InputRecord,
    InputSpec,
    JobEvent,
    JobQuery,
    JobRecord,
    LegacyRecord,
    NewJob,
    ParamValue,
    QueueStats,
    ResultRecord,
    Scope,
    SessionRecord,
    State,
    TokenRecord,
)
from broker.store.rules import check_offset, check_result_declaration

__all__ = [
    "LOG_STREAMS",
    "AgentSeen",
    "ChangeListener",
    "Claim",
    "ExpiryReport",
    "InputRecord",
    "InputSpec",
    "JobEvent",
    "JobQuery",
    "JobRecord",
    "LegacyRecord",
    "NewJob",
    "ParamValue",
    "QueueStats",
    "ResultRecord",
    "Scope",
    "SessionRecord",
    "State",
    "Store",
    "TokenRecord",
    "check_offset",
    "check_result_declaration",
]
