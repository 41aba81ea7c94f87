"""The hand-over of a job to an agent, over every store backend: a claim commits only for a
token still valid at that moment, and a holder can hand a job back at once (``release_claim``).
"""

from __future__ import annotations

import pytest

from broker.errors import InvalidState, StaleEpoch, Unauthorized
from broker.store import Scope, State, Store, TokenRecord
from tests.unit.broker.test_store import T0, TTL, Changes, changes, queued, store

__all__ = ["changes", "store"]  # fixtures used here by name


def site_token(store: Store, token_id: str = "0123456789ab", site: str = "site-a") -> str:
    store.create_token(TokenRecord(token_id, "f" * 64, Scope.SITE, site, T0))
    return token_id


def test_a_claim_by_a_valid_token_takes_the_job(store: Store) -> None:
    token = site_token(store)
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0 + 1, token_id=token)
    assert got is not None and got.job.job_id == job_id and got.epoch == 1


def test_a_token_revoked_while_its_claim_waited_takes_nothing(
    store: Store, changes: Changes
) -> None:
    token = site_token(store)
    job_id = queued(store)
    assert store.revoke_token(token, T0 + 1)
    before = len(changes.jobs)
    with pytest.raises(Unauthorized, match=f"token {token} was revoked"):
        store.claim("site-a", "agent-1", TTL, T0 + 2, token_id=token)
    job = store.get_job(job_id)
    assert job is not None and job.state is State.QUEUED and job.lease_epoch == 0
    assert len(changes.jobs) == before  # a refused claim commits nothing
    assert store.agents_seen() == []  # and is not counted as the agent being online
    # A valid token of the same site takes the job.
    other = site_token(store, "ba9876543210")
    got = store.claim("site-a", "agent-2", TTL, T0 + 3, token_id=other)
    assert got is not None and got.job.job_id == job_id


def test_a_token_the_store_does_not_hold_takes_nothing(store: Store) -> None:
    queued(store)
    with pytest.raises(Unauthorized, match="not known"):
        store.claim("site-a", "agent-1", TTL, T0 + 1, token_id="000000000000")


def test_a_released_claim_is_queued_again_at_its_old_place(
    store: Store, changes: Changes
) -> None:
    first = queued(store, now=T0)
    second = queued(store, now=T0 + 5)
    got = store.claim("site-a", "agent-1", TTL, T0 + 10)
    assert got is not None and got.job.job_id == first
    changes.sites.clear()
    back = store.release_claim(first, got.epoch, T0 + 11)
    assert back.state is State.QUEUED and back.agent_id is None and back.lease_expires is None
    assert back.queued_at == T0  # not behind the job queued after it
    assert back.version > got.job.version
    assert changes.sites == ["site-a"]  # a waiting claim of the site is woken for it
    again = store.claim("site-a", "agent-2", TTL, T0 + 12)
    assert again is not None and again.job.job_id == first and again.epoch == got.epoch + 1
    assert store.claim("site-a", "agent-3", TTL, T0 + 12).job.job_id == second  # type: ignore[union-attr]


def test_a_released_claim_with_a_cancel_requested_ends_cancelled(store: Store) -> None:
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0 + 1)
    assert got is not None
    store.cancel(job_id, T0 + 2)
    ended = store.release_claim(job_id, got.epoch, T0 + 3)
    assert ended.state is State.CANCELLED and ended.outcome is not None
    assert ended.outcome["reason"] == "cancelled before any agent started it"


def test_a_released_running_job_waits_for_its_own_agent(store: Store) -> None:
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0 + 1)
    assert got is not None
    store.mark_running(job_id, got.epoch, "native-7", TTL, T0 + 2)
    lost = store.release_claim(job_id, got.epoch, T0 + 3)
    assert lost.state is State.RUNNING and lost.agent_lost and lost.native_id == "native-7"
    # Nobody else may start it a second time; its own agent re-attaches at once.
    assert store.claim("site-a", "agent-2", TTL, T0 + 4) is None
    back = store.claim("site-a", "agent-1", TTL, T0 + 4)
    assert back is not None and back.reattach and back.job.job_id == job_id


def test_only_the_holder_releases(store: Store) -> None:
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0 + 1)
    assert got is not None
    with pytest.raises(StaleEpoch):
        store.release_claim(job_id, got.epoch + 1, T0 + 2)
    store.release_claim(job_id, got.epoch, T0 + 2)
    with pytest.raises(StaleEpoch):  # queued again: nobody holds it now
        store.release_claim(job_id, got.epoch, T0 + 3)
    store.cancel(job_id, T0 + 4)
    with pytest.raises(InvalidState):
        store.release_claim(job_id, got.epoch, T0 + 5)
