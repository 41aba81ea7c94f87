# ruff: noqa: F811 - the backend fixtures of test_store are imported by name
"""The store's operator views on every backend: job timelines, keyset pages, recent failures
and when a token was last used."""

from __future__ import annotations

from broker.store import JobEvent, JobQuery, Scope, State, Store, TokenRecord
from broker.store.rules import NOTE_AGENT_LOST, NOTE_CANCEL_REQUESTED
from tests.unit.broker.test_store import T0, changes, queued, spec, store  # noqa: F401

FAILED = {"state": "failed", "exit_code": 3, "signal": None, "reason": "exit 3"}
DONE = {"state": "completed", "exit_code": 0, "signal": None, "reason": ""}


def test_the_timeline_holds_each_state_change_with_its_time_and_agent(store: Store) -> None:
    job_id = queued(store, now=T0 + 1)
    claim = store.claim("site-a", "agent-1", 30, T0 + 2)
    assert claim is not None and claim.job.job_id == job_id
    store.mark_running(job_id, claim.epoch, "4711", 30, T0 + 3)
    store.renew_lease(job_id, claim.epoch, 30, T0 + 4)  # no change of state: no entry
    store.cancel(job_id, T0 + 5)
    store.complete(job_id, claim.epoch, FAILED, [], [], T0 + 6)
    assert store.job_events(job_id) == [
        JobEvent(T0 + 1, State.CREATED),
        JobEvent(T0 + 1, State.QUEUED),
        JobEvent(T0 + 2, State.CLAIMED, "agent-1"),
        JobEvent(T0 + 3, State.RUNNING, "agent-1"),
        JobEvent(T0 + 5, State.RUNNING, "agent-1", NOTE_CANCEL_REQUESTED),
        JobEvent(T0 + 6, State.FINISHED, "agent-1"),
    ]


def test_a_lapsed_lease_is_noted_and_a_deleted_job_has_no_timeline(store: Store) -> None:
    job_id = queued(store)
    claim = store.claim("site-a", "agent-1", 30, T0)
    assert claim is not None
    store.mark_running(job_id, claim.epoch, None, 30, T0)
    store.expire(T0 + 31, 3600)
    assert store.job_events(job_id)[-1] == JobEvent(T0 + 31, State.RUNNING, "agent-1",
                                                    NOTE_AGENT_LOST)  # fmt: skip
    store.delete_job(job_id)
    assert store.job_events(job_id) == []


def test_pages_walk_newest_first_by_keyset_with_filters(store: Store) -> None:
    made = []
    for n in range(7):
        job, _ = store.create_job(spec("site-a" if n % 2 else "site-b", client=f"c{n % 3}"),
                                  T0 + n // 2)  # fmt: skip  (ties of created_at on purpose)
        made.append(job)
    newest = sorted(made, key=lambda j: (j.created_at, j.job_id), reverse=True)
    seen: list[str] = []
    query = JobQuery()
    while page := store.page_jobs(query, 3):
        seen += [j.job_id for j in page]
        query = JobQuery(before=(page[-1].created_at, page[-1].job_id))
    assert seen == [j.job_id for j in newest]
    site_a = store.page_jobs(JobQuery(site="site-a"), 10)
    assert [j.job_id for j in site_a] == [j.job_id for j in newest if j.spec.site == "site-a"]
    window = store.page_jobs(JobQuery(client="c0", since=T0 + 1, until=T0 + 3), 10)
    expect = [j.job_id for j in newest if j.spec.client == "c0" and T0 + 1 <= j.created_at < T0 + 3]
    assert [j.job_id for j in window] == expect and expect
    assert store.page_jobs(JobQuery(state=State.QUEUED), 10) == []
    assert store.page_jobs(JobQuery(command="other"), 10) == []
    assert len(store.page_jobs(JobQuery(command="fatigue"), 10)) == 7


def test_failures_since_counts_failed_and_expired_jobs_per_site(store: Store) -> None:
    for outcome in (FAILED, DONE):
        job_id = queued(store)
        claim = store.claim("site-a", "agent-1", 30, T0)
        assert claim is not None
        store.complete(job_id, claim.epoch, outcome, [], [], T0 + 10)
    queued(store, site="site-b")
    store.expire(T0 + 100, 50)  # site-b's job waited too long
    assert store.failures_since(T0) == {"site-a": 1, "site-b": 1}
    assert store.failures_since(T0 + 50) == {"site-b": 1}


def test_a_tokens_last_use_is_recorded(store: Store) -> None:
    store.create_token(TokenRecord("0123456789ab", "f" * 64, Scope.OPERATOR, "ops", T0))
    assert store.list_tokens()[0].last_used is None
    store.token_used("0123456789ab", T0 + 5)
    assert store.list_tokens()[0].last_used == T0 + 5
