"""Bearer tokens: format, hashing, verification against the store, refusal reasons."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from broker.auth import LAST_USED_STEP, check_subject, hash_token, new_token, parse_token, verify
from broker.errors import InvalidField, Unauthorized
from broker.store import Scope
from broker.store.sqlite import SQLiteStore


def test_new_token_has_the_documented_shape_and_only_its_hash_is_kept() -> None:
    token, record = new_token(Scope.SITE, "rme-u-tokyo", 1.0)
    prefix, token_id, secret = token.split("_", 2)
    assert prefix == "mbt" and token_id == record.token_id and len(token_id) == 12
    assert int(token_id, 16) >= 0 and len(secret) >= 32
    assert record.sha256 == hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
    assert token not in repr(record)
    assert parse_token(token) == token_id


def test_two_tokens_never_share_a_secret() -> None:
    tokens = {new_token(Scope.CLIENT, "c", 1.0)[0] for _ in range(50)}
    assert len(tokens) == 50


@pytest.mark.parametrize(
    "text",
    ["", "mbt_", "mbt_0123456789ab", "mbt_0123456789AB_" + "a" * 40,
     "xyz_0123456789ab_" + "a" * 40, "mbt_0123456789ab_short",
     "mbt_0123456789ab_" + "a" * 40 + " ", "mbt_0123456789ab_" + "ä" * 40],
)  # fmt: skip
def test_malformed_tokens_are_unauthorized(text: str) -> None:
    with pytest.raises(Unauthorized):
        parse_token(text)


@pytest.mark.parametrize(("scope", "name"), [(Scope.SITE, "a/b"), (Scope.CLIENT, ""),
                                             (Scope.SITE, "-x"), (Scope.CLIENT, "x" * 65)])
def test_subject_names_are_plain(scope: Scope, name: str) -> None:
    with pytest.raises(InvalidField):
        check_subject(scope, name)


def test_admin_subject_is_always_admin() -> None:
    assert check_subject(Scope.ADMIN, "anything") == "admin"


def test_verify_accepts_the_token_and_refuses_forged_unknown_and_revoked(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.sqlite3"))
    token, record = new_token(Scope.CLIENT, "node1", 1.0)
    store.create_token(record)
    principal = verify(store, token)
    assert (principal.scope, principal.subject, principal.token_id) == (
        Scope.CLIENT, "node1", record.token_id)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(Unauthorized, match="not known"):
        verify(store, forged)
    unknown, _ = new_token(Scope.CLIENT, "node1", 1.0)
    with pytest.raises(Unauthorized, match="not known"):
        verify(store, unknown)
    store.revoke_token(record.token_id, 2.0)
    with pytest.raises(Unauthorized, match="revoked"):
        verify(store, token)


def test_verify_records_the_last_use_at_most_once_a_step(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.sqlite3"))
    token, record = new_token(Scope.OPERATOR, "prometheus", 1.0)
    store.create_token(record)
    verify(store, token)  # without a time: nothing recorded
    assert store.list_tokens()[0].last_used is None
    verify(store, token, 100.0)
    verify(store, token, 100.0 + LAST_USED_STEP - 1)  # within the step: kept as it was
    assert store.list_tokens()[0].last_used == 100.0
    verify(store, token, 100.0 + LAST_USED_STEP)
    assert store.list_tokens()[0].last_used == 100.0 + LAST_USED_STEP
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(Unauthorized):
        verify(store, forged, 1000.0)  # a refused token is not "used"
    assert store.list_tokens()[0].last_used == 100.0 + LAST_USED_STEP
