"""Schema versions: SQLite migrates as it opens, PostgreSQL only on ``broker migrate``; both
refuse a schema newer than the code, and a serving PostgreSQL broker refuses one not migrated.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli import cli
from broker.store import State, migrations, postgres_schema, sqlite_schema
from broker.store.locations import migrate, open_store, parse_store_url, sqlite_at
from broker.store.migrations import SchemaMismatch
from broker.store.sqlite import SQLiteStore
from broker.store.sqlite_schema import SCHEMA_VERSION
from tests.support.postgres import PostgresServer
from tests.unit.broker.test_store import T0, spec

# PostgreSQL has a step SQLite lacks (poll_slots: limits across instances).
PG_VERSION = postgres_schema.SCHEMA_VERSION


def versions(path: Path) -> tuple[list[int], int]:
    with sqlite3.connect(path) as conn:
        rows = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
        return rows, conn.execute("PRAGMA user_version").fetchone()[0]


def test_a_new_sqlite_database_records_its_version(tmp_path: Path) -> None:
    SQLiteStore(str(tmp_path / "b.sqlite3")).close()
    assert versions(tmp_path / "b.sqlite3") == ([1, 2, 3, 5], SCHEMA_VERSION)
    SQLiteStore(str(tmp_path / "b.sqlite3")).close()  # opening again changes nothing
    assert versions(tmp_path / "b.sqlite3") == ([1, 2, 3, 5], SCHEMA_VERSION)


def test_a_database_of_a_broker_before_schema_version_opens_with_its_jobs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite3"
    store = SQLiteStore(str(path))
    kept = store.create_job(spec(), T0)[0].job_id
    store.close()
    with sqlite3.connect(path) as conn:  # what such a broker left: user_version 1 only
        for statement in (
            "DROP TABLE schema_version", "DROP TABLE job_events", "DROP TABLE console_sessions",
            "ALTER TABLE tokens DROP COLUMN last_used", "ALTER TABLE tokens DROP COLUMN expires_at",
            "DROP INDEX jobs_by_created",
            "DROP INDEX jobs_by_state_created", "DROP INDEX jobs_by_site_created",
            "DROP INDEX jobs_by_finish", "PRAGMA user_version = 1",
        ):  # fmt: skip
            conn.execute(statement)
    store = SQLiteStore(str(path))
    job = store.get_job(kept)
    events = store.job_events(kept)
    store.close()
    assert job is not None and job.state is State.CREATED
    assert events == []  # jobs from before step 3 have no timeline; new changes add to it
    assert versions(path) == ([1, 2, 3, 5], 5)


@pytest.mark.parametrize("how", ["schema_version", "user_version"])
def test_sqlite_refuses_a_newer_schema(tmp_path: Path, how: str) -> None:
    path = tmp_path / "b.sqlite3"
    SQLiteStore(str(path)).close()
    with sqlite3.connect(path) as conn:
        if how == "schema_version":
            conn.execute("INSERT INTO schema_version VALUES (99, 'later', 0)")
        else:
            conn.execute("DROP TABLE schema_version")
            conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaMismatch, match="schema version 99, newer than this broker's"):
        SQLiteStore(str(path))
    with pytest.raises(SchemaMismatch):
        migrate(sqlite_at(str(path)))


def test_postgresql_is_refused_until_migrated_then_migrate_is_idempotent(
    postgres_server: PostgresServer,
) -> None:
    location = parse_store_url(postgres_server.new_database())
    with pytest.raises(SchemaMismatch, match=r"no broker schema yet.*mint-bridge broker migrate"):
        open_store(location)
    assert migrate(location) == (0, PG_VERSION)
    assert migrate(location) == (PG_VERSION, PG_VERSION)
    store = open_store(location)
    created = store.create_job(spec(), T0)[0].job_id
    store.close()
    assert migrate(location) == (PG_VERSION, PG_VERSION)
    store = open_store(location)
    assert store.get_job(created) is not None
    store.close()


def test_postgresql_refuses_a_newer_schema_to_serve_and_to_migrate(
    postgres_server: PostgresServer,
) -> None:
    import psycopg

    url = postgres_server.new_database()
    location = parse_store_url(url)
    migrate(location)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'later', 0)")
    for attempt in (open_store, migrate):
        with pytest.raises(SchemaMismatch, match="schema version 99, newer than this broker's"):
            attempt(location)  # type: ignore[operator]


def _config(tmp_path: Path, store: str = "") -> str:
    path = tmp_path / "broker.toml"
    path.write_text('[server]\ntls = false\nhost = "127.0.0.1"\n[storage]\ndata_dir = "d"\n'
                    + (f'store = "{store}"\n' if store else ""))  # fmt: skip
    return str(path)


def test_the_migrate_command_on_sqlite(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = CliRunner().invoke(cli, ["migrate", "--config", config])
    assert first.exit_code == 0, first.output
    assert "schema version 0 -> 5" in first.output
    again = CliRunner().invoke(cli, ["migrate", "--config", config])
    assert again.exit_code == 0 and "schema version 5, nothing to migrate" in again.output
    with sqlite3.connect(tmp_path / "d" / "broker.sqlite3") as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'later', 0)")
    newer = CliRunner().invoke(cli, ["migrate", "--config", config])
    assert newer.exit_code != 0 and "newer than this broker's" in newer.output


def test_the_migrate_command_on_postgresql(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.new_database()
    config = _config(tmp_path, url)
    refused = CliRunner().invoke(cli, ["token", "list", "--config", config])
    assert refused.exit_code != 0 and "run `mint-bridge broker migrate" in refused.output
    first = CliRunner().invoke(cli, ["migrate", "--config", config])
    assert first.exit_code == 0 and f"{url}: schema version 0 -> {PG_VERSION}" in first.output
    again = CliRunner().invoke(cli, ["migrate", "--config", config])
    assert again.exit_code == 0 and "nothing to migrate" in again.output
    listed = CliRunner().invoke(cli, ["token", "list", "--config", config])
    assert listed.exit_code == 0, listed.output


_V1_TOKEN = ("t1", "0" * 64, "client", "c", 1.0)


def test_a_version_1_sqlite_database_gains_token_expiry_and_keeps_its_tokens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite3"
    with sqlite3.connect(path) as conn:  # what a broker of schema version 1 left
        conn.execute(migrations.VERSION_TABLE)
        for statement in sqlite_schema.MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1, 'v1', 0)")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, NULL)", _V1_TOKEN)
    store = SQLiteStore(str(path))
    token = store.get_token("t1")
    store.close()
    assert versions(path) == ([1, 2, 3, 5], 5)
    assert token is not None and token.subject == "c" and token.expires_at is None


def test_a_version_1_postgresql_database_migrates_to_token_expiry(
    postgres_server: PostgresServer,
) -> None:
    import psycopg

    url = postgres_server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(migrations.VERSION_TABLE)
        for statement in postgres_schema.MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1, 'v1', 0)")
        conn.execute("INSERT INTO tokens VALUES (%s, %s, %s, %s, %s, NULL)", _V1_TOKEN)
    location = parse_store_url(url)
    needs = f"has schema version 1; this broker needs version {PG_VERSION}"
    with pytest.raises(SchemaMismatch, match=needs):
        open_store(location)
    assert migrate(location) == (1, PG_VERSION)
    store = open_store(location)
    token = store.get_token("t1")
    store.close()
    assert token is not None and token.subject == "c" and token.expires_at is None
