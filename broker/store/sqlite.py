"""The SQLite backend of ``broker.store.Store``: one file, WAL mode, one writer at a time.

The embedded default. ``SQLiteStore`` opens the file (``sqlite_db``), brings its schema to this
code's version as it opens (``sqlite_schema``; a newer one is refused) and runs the shared
``SQLStore`` over it. This module never builds SQL from data and never stores a token.
"""

from __future__ import annotations

import time

from broker.store import sqlite_schema
from broker.store.interface import ChangeListener
from broker.store.sql_store import SQLStore
from broker.store.sqlite_db import Database


class SQLiteStore(SQLStore):
    def __init__(self, path: str, listener: ChangeListener | None = None) -> None:
        database = Database(path)
        super().__init__(database, listener)
        self.path = path
        try:
            with database.transaction() as tx:
                # (version before, version after): what opening it migrated.
                self.schema_versions = sqlite_schema.migrate(
                    tx, time.time(), f"the broker database {path}"
                )
        except BaseException:
            database.close()
            raise
