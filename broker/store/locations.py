"""Where a broker keeps its store: the ``store`` URL of broker.toml, and opening it.

``sqlite:///ABSOLUTE/PATH`` is the embedded default (without ``store``: ``broker.sqlite3`` in
the data dir); ``postgresql://USER@HOST:PORT/DATABASE`` (or ``postgres://``, with libpq's
query options such as ``sslmode`` or ``passfile``) a PostgreSQL database. A password may be in
the URL, but need not be: ``[storage] password_file``, libpq's ``passfile`` option or
``PGPASSFILE`` keep it out of the config.

This module never logs or shows a password: ``StoreLocation.shown`` is the URL without it,
and ``parse_store_url``'s errors never quote the text they were given. It imports psycopg
only when a PostgreSQL store is opened.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.errors import StoreError
from broker.store.interface import ChangeListener, Store

SQLITE, POSTGRESQL = "sqlite", "postgresql"
_POSTGRES_SCHEMES = {"postgresql", "postgres"}

EXPECTED = "sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST:PORT/DATABASE"


@dataclass(frozen=True)
class StoreLocation:
    kind: str
    # As written, perhaps with a password: for connecting only, never for a message.
    url: str = field(repr=False)
    path: str = ""  # SQLite's file
    password_file: str | None = None

    @property
    def shown(self) -> str:
        if self.kind == SQLITE:
            return f"sqlite://{self.path}"
        return redact(self.url)


def sqlite_at(path: str) -> StoreLocation:
    return StoreLocation(SQLITE, f"sqlite://{path}", path=path)


def redact(url: str) -> str:
    """The URL without its password (and without its query, where a password may also be)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_store_url(text: str, password_file: str | None = None) -> StoreLocation:
    """The location a ``store`` value names; ValueError says what is wrong with it."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme == SQLITE:
        if parts.netloc or not parts.path.startswith("/") or parts.query:
            raise ValueError(f"a SQLite store is sqlite:///ABSOLUTE/PATH (expected {EXPECTED})")
        return sqlite_at(os.path.normpath(parts.path))
    if parts.scheme in _POSTGRES_SCHEMES:
        try:
            parts.port  # noqa: B018 - urllib checks the port as it is read
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        database = parts.path.lstrip("/")
        if not database or "/" in database:
            raise ValueError(f"name the database: {EXPECTED}")
        return StoreLocation(POSTGRESQL, text.strip(), password_file=password_file)
    raise ValueError(f"unknown kind of store (expected {EXPECTED})")


def read_password(location: StoreLocation) -> str | None:
    if location.password_file is None:
        return None
    try:
        with open(location.password_file, encoding="utf-8") as handle:
            password = handle.readline().rstrip("\r\n")
    except OSError as exc:
        raise StoreError(
            f"cannot read the broker database's password_file {location.password_file}:"
            f" {exc.strerror}"
        ) from exc
    if not password:
        raise StoreError(f"the password_file {location.password_file} is empty")
    return password


def open_store(
    location: StoreLocation,
    listener: ChangeListener | None = None,
    *,
    pool_size: int = 10,
    resync: Callable[[], None] | None = None,
) -> Store:
    """The store at ``location``, ready to serve (PostgreSQL: migrated, else refused).

    On PostgreSQL ``listener`` also hears other instances' changes; ``resync`` is called when
    some may have been missed (the database restarted), to wake every long poll.
    """
    if location.kind == SQLITE:
        from broker.store.sqlite import SQLiteStore

        return SQLiteStore(location.path, listener=listener)
    from broker.store.postgres import PostgresStore

    return PostgresStore(location, listener, pool_size=pool_size, resync=resync)


def migrate(location: StoreLocation) -> tuple[int, int]:
    """Apply the schema steps the store lacks: (version before, version after)."""
    if location.kind == SQLITE:
        from broker.store.sqlite import SQLiteStore

        store = SQLiteStore(location.path)
        store.close()
        return store.schema_versions
    from broker.store.postgres import PostgresStore

    return PostgresStore.migrate(location)
