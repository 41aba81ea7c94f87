# ruff: noqa: F811 - the backend fixtures of test_store are imported by name
"""The web console's sessions in the store, on every backend: kept by the hash of their id,
looked up, touched, ended by time, by their token's revocation and by log-out, and the oldest
dropped beyond the limit; and the console's ``SessionTable`` over each backend."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from broker.console.sessions import TOUCH_STEP, SessionTable
from broker.errors import StateConflict
from broker.store import Scope, SessionRecord, Store
from broker.store.sqlite import SQLiteStore
from tests.unit.broker.test_store import T0, changes, store  # noqa: F401

IDLE = 1800.0
LIFETIME = 12 * 3600.0


def record(n: int, token_id: str = "tok000000001", created: float = T0,
           scope: Scope = Scope.ADMIN) -> SessionRecord:  # fmt: skip
    key = hashlib.sha256(f"session-{n}".encode()).hexdigest()
    return SessionRecord(key, token_id, scope, f"csrf-{n}", created, created, created + LIFETIME)


def test_a_session_is_kept_whole_and_found_by_its_hash_only(store: Store) -> None:
    made = record(1, scope=Scope.OPERATOR)
    store.create_session(made, 100)
    assert store.get_session(made.session_hash) == made
    assert store.get_session(record(2).session_hash) is None
    with pytest.raises(StateConflict, match="exists already") as refused:
        store.create_session(made, 100)
    assert made.session_hash not in refused.value.message


def test_touch_moves_only_the_last_use(store: Store) -> None:
    made = record(1)
    store.create_session(made, 100)
    store.touch_session(made.session_hash, T0 + 90)
    store.touch_session(record(2).session_hash, T0 + 90)  # unknown: nothing, no error
    found = store.get_session(made.session_hash)
    assert found is not None and found.used_at == T0 + 90
    assert (found.created_at, found.expires_at, found.csrf) == (T0, T0 + LIFETIME, "csrf-1")
    assert store.get_session(record(2).session_hash) is None


def test_ended_sessions_go_by_idle_time_and_by_lifetime(store: Store) -> None:
    idle, busy, fresh = record(1), record(2), record(3, created=T0 + IDLE)
    for made in (idle, busy, fresh):
        store.create_session(made, 100)
    store.touch_session(busy.session_hash, T0 + IDLE - 1)
    assert not idle.ended(T0 + IDLE - 1, IDLE) and idle.ended(T0 + IDLE, IDLE)
    assert store.delete_ended_sessions(T0 + IDLE - 1, IDLE) == 0
    assert store.delete_ended_sessions(T0 + IDLE, IDLE) == 1
    assert store.get_session(idle.session_hash) is None
    assert store.get_session(busy.session_hash) is not None
    for step in range(1, 48):  # used every quarter hour, it still ends at its lifetime
        store.touch_session(busy.session_hash, T0 + step * IDLE / 2)
        store.touch_session(fresh.session_hash, T0 + step * IDLE / 2)
    assert store.delete_ended_sessions(T0 + LIFETIME - 1, IDLE) == 0
    assert store.delete_ended_sessions(T0 + LIFETIME, IDLE) == 1
    assert store.get_session(busy.session_hash) is None
    assert store.get_session(fresh.session_hash) is not None


def test_revoking_by_token_ends_that_tokens_sessions_only(store: Store) -> None:
    mine = [record(1, "tok000000001"), record(2, "tok000000001")]
    other = record(3, "tok000000002")
    for made in (*mine, other):
        store.create_session(made, 100)
    assert store.delete_token_sessions("tok000000001") == 2
    assert store.delete_token_sessions("tok000000001") == 0
    assert [store.get_session(m.session_hash) for m in mine] == [None, None]
    assert store.get_session(other.session_hash) == other


def test_log_out_deletes_the_session_once(store: Store) -> None:
    made, kept = record(1), record(2)
    store.create_session(made, 100)
    store.create_session(kept, 100)
    assert store.delete_session(made.session_hash) is True
    assert store.delete_session(made.session_hash) is False
    assert store.get_session(made.session_hash) is None
    assert store.get_session(kept.session_hash) == kept


def test_beyond_the_limit_the_oldest_sessions_go(store: Store) -> None:
    made = [record(n, created=T0 + n) for n in range(5)]
    for one in made:
        store.create_session(one, 3)
    assert [store.get_session(m.session_hash) is not None for m in made] == [
        False, False, True, True, True]  # fmt: skip


def test_sqlite_keeps_the_sessions_hash_not_its_id(tmp_path: Path) -> None:
    session_id = "a-session-id-the-browser-holds"
    key = hashlib.sha256(session_id.encode()).hexdigest()
    backend = SQLiteStore(str(tmp_path / "b.sqlite3"))
    backend.create_session(SessionRecord(key, "tok000000001", Scope.ADMIN, "c", T0, T0,
                                         T0 + LIFETIME), 10)  # fmt: skip
    backend.close()
    with sqlite3.connect(tmp_path / "b.sqlite3") as conn:
        rows = conn.execute("SELECT * FROM console_sessions").fetchall()
    assert rows == [(key, "tok000000001", "admin", "c", T0, T0, T0 + LIFETIME)]
    assert session_id.encode() not in (tmp_path / "b.sqlite3").read_bytes()


# --- the console's table over the store ------------------------------------------------------


def test_the_console_table_finds_a_session_by_its_id_and_records_use_to_the_minute(
    store: Store,
) -> None:
    table = SessionTable(store, IDLE, LIFETIME)
    session_id, made = table.open("tok000000001", Scope.OPERATOR, T0)
    assert made.session_hash == hashlib.sha256(session_id.encode()).hexdigest() != session_id
    assert table.get(session_id, T0 + TOUCH_STEP - 1) == made  # no write within the step
    assert table.get(session_id, T0 + IDLE - 1) == made  # ...then its use is recorded
    kept = store.get_session(made.session_hash)
    assert kept is not None and kept.used_at == T0 + IDLE - 1
    assert table.get("not-a-session", T0) is None
    assert table.get(session_id, T0 + 2 * IDLE - 1) is None  # idle: ended and deleted
    assert store.get_session(made.session_hash) is None


def test_the_console_table_ends_a_tokens_sessions_and_a_logged_out_one(store: Store) -> None:
    table = SessionTable(store, IDLE, LIFETIME)
    first, _ = table.open("tok000000001", Scope.ADMIN, T0)
    second, _ = table.open("tok000000001", Scope.ADMIN, T0)
    other, _ = table.open("tok000000002", Scope.ADMIN, T0)
    assert table.close_token("tok000000001") == 2
    assert (table.get(first, T0), table.get(second, T0)) == (None, None)
    assert table.close(other) is True and table.get(other, T0) is None
    assert table.close(other) is False
