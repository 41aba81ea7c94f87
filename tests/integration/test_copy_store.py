"""``mint-bridge broker copy-store`` as an operator runs it: SQLite -> PostgreSQL -> SQLite,
every row arriving (tokens, agents, jobs in each state with inputs, results and timelines,
legacy jobs), a non-empty target refused unless ``--replace``, and a copied store serving the
same jobs (a claim on the copy takes the same job the original would have). Console sessions
are not copied, and a replaced target loses its own.

PostgreSQL is a real server (``tests.support.postgres``); with CI=true it must start.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg

from broker.auth import new_token
from broker.store import InputSpec, NewJob, ResultRecord, Scope, SessionRecord
from broker.store.copy import TABLES
from broker.store.locations import migrate, open_store, parse_store_url
from broker.store.sqlite import SQLiteStore
from tests.support.postgres import PostgresServer, postgres_server

__all__ = ["postgres_server"]  # a fixture used here by name

T0 = 1_000_000.0
IDENTITY = {"jobs": "rowid", "job_events": "seq"}


def fill(path: Path) -> dict[str, str]:
    """A SQLite store with something in every table; the ids of its jobs by role."""
    store = SQLiteStore(str(path))
    try:
        for scope, subject in ((Scope.ADMIN, "admin"), (Scope.CLIENT, "node01"),
                               (Scope.SITE, "site-a")):  # fmt: skip
            store.create_token(new_token(scope, subject, T0)[1])
        data = b"input bytes"
        digest = hashlib.sha256(data).hexdigest()
        ids: dict[str, str] = {}
        for role in ("first", "second", "running", "finished"):
            spec = NewJob(job_id=str(uuid.uuid4()), client="node01", site="site-a",
                          command="fatigue", params={"cycles": 10, "role": role},
                          inputs=(InputSpec("in.dat", len(data), digest, 0o644),))  # fmt: skip
            job, _ = store.create_job(spec, T0)
            store.set_input_received(job.job_id, "in.dat", 0, len(data), T0 + 1)
            store.submit(job.job_id, T0 + 2)
            ids[role] = job.job_id
        claims = {}
        for role in ("running", "finished"):
            claim = store.claim("site-a", "agent-1", 60.0, T0 + 3)
            assert claim is not None
            claims[role] = claim
            ids[role] = claim.job.job_id  # claims take the oldest first
        store.mark_running(ids["running"], claims["running"].epoch, "4242", 60.0, T0 + 4)
        result = b"result"
        record = ResultRecord("sub/r.csv", len(result), hashlib.sha256(result).hexdigest(),
                              received=len(result), mode=0o600)  # fmt: skip
        epoch = claims["finished"].epoch
        store.set_result_upload(ids["finished"], epoch, record, 0, T0 + 5)
        outcome = {"state": "completed", "exit_code": 0, "signal": None, "reason": ""}
        store.complete(ids["finished"], epoch, outcome, [record], [], T0 + 6)
        legacy = NewJob(job_id=str(uuid.uuid4()), client="node01", site="site-a",
                        command="legacy", params={}, inputs=())  # fmt: skip
        ids["legacy"] = store.create_legacy_job(legacy, {"calc": "info"}, T0 + 4).job_id
        store.create_session(session("source"), 10)
    finally:
        store.close()
    return ids


def session(name: str) -> SessionRecord:
    key = hashlib.sha256(name.encode()).hexdigest()
    return SessionRecord(key, "tok000000001", Scope.ADMIN, "csrf", T0, T0, T0 + 3600)


def sessions_in(url: str) -> int:
    store = open_store(parse_store_url(url), pool_size=1)
    try:
        return sum(store.get_session(session(n).session_hash) is not None
                   for n in ("source", "target"))  # fmt: skip
    finally:
        store.close()


def rows_sqlite(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        return {table: _sorted(conn.execute(f"SELECT * FROM {table} ORDER BY {order}"), table)
                for table, order in TABLES}  # fmt: skip


def rows_postgres(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {table: _sorted(conn.execute(f"SELECT * FROM {table} ORDER BY {order}"), table)  # type: ignore[arg-type]
                for table, order in TABLES}  # fmt: skip


def _sorted(cursor: Any, table: str) -> list[tuple[Any, ...]]:
    names = [d[0] for d in cursor.description]
    keep = sorted(n for n in names if n != IDENTITY.get(table))
    return [tuple(dict(zip(names, row, strict=True))[n] for n in keep) for row in cursor]


def copy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker.cli", "copy-store", *args],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_copy_sqlite_to_postgresql_and_back_loses_nothing(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    original = tmp_path / "original.sqlite3"
    ids = fill(original)
    before = rows_sqlite(original)
    assert all(before[t] for t, _ in TABLES), "every table holds rows"
    pg_url = postgres_server.new_database("copy")

    # Not migrated yet: refused with the fix, nothing written.
    refused = copy("--from", f"sqlite://{original}", "--to", pg_url)
    assert refused.returncode != 0 and "mint-bridge broker migrate" in refused.stderr
    migrate(parse_store_url(pg_url))

    done = copy("--from", f"sqlite://{original}", "--to", pg_url)
    assert done.returncode == 0, done.stderr
    assert "copied 3 tokens, 1 agents, 5 jobs, 4 inputs" in done.stderr
    assert rows_postgres(pg_url) == before
    assert sessions_in(f"sqlite://{original}") == 1 and sessions_in(pg_url) == 0

    # A second copy into the now full target is refused; --replace makes it whole again.
    again = copy("--from", f"sqlite://{original}", "--to", pg_url)
    assert again.returncode != 0 and "not empty" in again.stderr and "--replace" in again.stderr
    assert rows_postgres(pg_url) == before
    target = open_store(parse_store_url(pg_url), pool_size=1)
    target.create_session(session("target"), 10)
    target.close()
    assert sessions_in(pg_url) == 1
    replaced = copy("--from", f"sqlite://{original}", "--to", pg_url, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert rows_postgres(pg_url) == before
    assert sessions_in(pg_url) == 0  # the target's own sessions went with its other rows

    back = tmp_path / "back.sqlite3"
    home = copy("--from", pg_url, "--to", f"sqlite://{back}")
    assert home.returncode == 0, home.stderr
    assert rows_sqlite(back) == before
    assert sessions_in(f"sqlite://{back}") == 0

    # The copies serve the same queue: the next claim takes the same job on each.
    for location in (parse_store_url(pg_url), parse_store_url(f"sqlite://{back}")):
        store = open_store(location, pool_size=1)
        try:
            claim = store.claim("site-a", "agent-2", 60.0, T0 + 10)
            assert claim is not None and claim.job.job_id not in (ids["running"],
                                                                   ids["finished"])  # fmt: skip
            assert store.get_legacy(ids["legacy"]) is not None
        finally:
            store.close()


def test_copy_store_refuses_bad_urls_naming_the_option(tmp_path: Path) -> None:
    bad = copy("--from", "mysql://x/y", "--to", f"sqlite://{tmp_path / 'x.sqlite3'}")
    assert bad.returncode != 0 and "--from: unknown kind of store" in bad.stderr
    same = copy("--from", f"sqlite://{tmp_path / 'a'}", "--to", f"sqlite://{tmp_path / 'a'}")
    assert same.returncode != 0 and "the same store" in same.stderr
