"""The storage contract (``broker.store.Store``), run over every backend.

Backends are listed in ``BACKENDS``: SQLite, PostgreSQL (a real server,
``tests.support.postgres``; one migrated database emptied before each test) and memory as the
contract's reference. No test here is skipped for a backend: a difference is a bug of that
backend. Time is passed in explicitly, so leases and TTLs are tested without sleeping.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from broker.errors import (
    AlreadyClaimed,
    ChecksumMismatch,
    InputsIncomplete,
    InvalidState,
    NotFound,
    OffsetMismatch,
    StaleEpoch,
    StateConflict,
)
from broker.store import InputSpec, NewJob, ResultRecord, Scope, State, Store, TokenRecord
from broker.store.locations import open_store, parse_store_url
from broker.store.memory import MemoryStore
from broker.store.sqlite import SQLiteStore
from tests.support.postgres import empty

T0 = 1_000_000.0
TTL = 60.0


def _sqlite(request: pytest.FixtureRequest, listener: Callable[..., None]) -> Store:
    tmp: Path = request.getfixturevalue("tmp_path")
    return SQLiteStore(str(tmp / "broker.sqlite3"), listener=listener)


def _postgresql(request: pytest.FixtureRequest, listener: Callable[..., None]) -> Store:
    url: str = request.getfixturevalue("postgres_url")
    empty(url)
    return open_store(parse_store_url(url), listener, pool_size=4)


def _memory(request: pytest.FixtureRequest, listener: Callable[..., None]) -> Store:
    return MemoryStore(listener=listener)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Callable[..., None]], Store]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "memory": _memory,
}


class Changes:
    """Records what the store reported after each commit."""

    def __init__(self) -> None:
        self.jobs: list[str] = []
        self.sites: list[str] = []
        # Per commit, each site's commands of new claimable work (None: any claim's).
        self.claimable: list[dict[str, frozenset[str] | None]] = []

    def __call__(self, jobs: Iterable[str], sites: Mapping[str, Collection[str] | None]) -> None:
        self.jobs.extend(jobs)
        self.sites.extend(sites)
        if sites:
            self.claimable.append(
                {s: None if c is None else frozenset(c) for s, c in sites.items()}
            )


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, changes: Changes) -> Iterator[Store]:
    backend = BACKENDS[request.param](request, changes)
    yield backend
    backend.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec(site: str = "site-a", client: str = "node1", inputs: tuple[InputSpec, ...] = (),
         **extra: object) -> NewJob:  # fmt: skip
    return NewJob(job_id=str(uuid.uuid4()), client=client, site=site, command="fatigue",
                   params={"cycles": 10}, inputs=inputs, **extra)  # type: ignore[arg-type]


def queued(store: Store, site: str = "site-a", now: float = T0) -> str:
    job, _ = store.create_job(spec(site), now)
    store.submit(job.job_id, now)
    return job.job_id


# --- creating and submitting ----------------------------------------------------------------


def test_create_is_idempotent_for_the_same_client_and_body(store: Store) -> None:
    wanted = spec(inputs=(InputSpec("a.dat", 3, sha(b"abc")),), metadata={"wf": "1"})
    first, created = store.create_job(wanted, T0)
    again, created_again = store.create_job(wanted, T0 + 5)
    assert created and not created_again
    assert again == first
    assert first.state is State.CREATED and first.version == 1
    assert first.inputs[0].received == 0 and first.document()["inputs"][0]["sha256"] == sha(b"abc")


def test_create_with_another_body_or_client_conflicts(store: Store) -> None:
    wanted = spec()
    store.create_job(wanted, T0)
    with pytest.raises(StateConflict):
        store.create_job(NewJob(**{**wanted.__dict__, "command": "other"}), T0)
    with pytest.raises(StateConflict):
        store.create_job(NewJob(**{**wanted.__dict__, "client": "node2"}), T0)


def test_input_progress_checks_the_offset_and_submit_needs_complete_inputs(store: Store) -> None:
    job, _ = store.create_job(spec(inputs=(InputSpec("a", 10, sha(b"x" * 10)),
                                           InputSpec("empty", 0, sha(b"")))), T0)  # fmt: skip
    with pytest.raises(InputsIncomplete) as missing:
        store.submit(job.job_id, T0)
    assert missing.value.field == "a"
    updated = store.set_input_received(job.job_id, "a", 0, 4, T0)
    assert updated.input("a").received == 4 and updated.version == 2  # type: ignore[union-attr]
    with pytest.raises(OffsetMismatch) as mismatch:
        store.set_input_received(job.job_id, "a", 0, 10, T0)
    assert mismatch.value.headers == {"Upload-Offset": "4"}
    with pytest.raises(NotFound):
        store.set_input_received(job.job_id, "nope", 0, 1, T0)
    store.set_input_received(job.job_id, "a", 4, 10, T0)
    submitted = store.submit(job.job_id, T0 + 1)
    assert submitted.state is State.QUEUED
    assert store.submit(job.job_id, T0 + 2) == submitted  # idempotent
    with pytest.raises(InvalidState):
        store.set_input_received(job.job_id, "a", 10, 10, T0)


def test_list_jobs_filters_and_orders_newest_first(store: Store) -> None:
    ids = [store.create_job(spec(client="c1"), T0 + i)[0].job_id for i in range(3)]
    store.create_job(spec(client="c2"), T0 + 9)
    store.submit(ids[0], T0 + 10)
    assert [j.job_id for j in store.list_jobs(client="c1")] == ids[::-1]
    assert [j.job_id for j in store.list_jobs(client="c1", state=State.QUEUED)] == [ids[0]]
    assert len(store.list_jobs()) == 4 and len(store.list_jobs(limit=2)) == 2


# --- claims and leases -----------------------------------------------------------------------


def test_claim_takes_the_oldest_queued_job_of_the_site_only(store: Store, changes: Changes
                                                             ) -> None:  # fmt: skip
    other = queued(store, site="site-b", now=T0)
    first = queued(store, now=T0 + 1)
    second = queued(store, now=T0 + 2)
    assert "site-a" in changes.sites
    got = store.claim("site-a", "agent-1", TTL, T0 + 3)
    assert got is not None and got.job.job_id == first and got.epoch == 1 and not got.reattach
    assert got.job.state is State.CLAIMED and got.lease_expires == T0 + 3 + TTL
    assert store.claim("site-a", "agent-2", TTL, T0 + 3).job.job_id == second  # type: ignore[union-attr]
    assert store.claim("site-a", "agent-3", TTL, T0 + 3) is None
    assert store.get_job(other).state is State.QUEUED  # type: ignore[union-attr]


def test_count_jobs_groups_by_site_and_state(store: Store) -> None:
    queued(store, site="site-b")
    queued(store)
    queued(store, now=T0 + 1)
    store.create_job(spec(), T0 + 2)
    store.claim("site-a", "agent-1", TTL, T0 + 3)
    created = store.get_job(store.list_jobs(state=State.CREATED)[0].job_id)
    assert created is not None
    assert store.count_jobs() == {
        ("site-a", State.CLAIMED): 1,
        ("site-a", State.QUEUED): 1,
        ("site-a", State.CREATED): 1,
        ("site-b", State.QUEUED): 1,
    }


def test_concurrent_claims_give_a_job_to_one_thread(store: Store) -> None:
    job_id = queued(store)
    barrier, won = threading.Barrier(8), []

    def race(index: int) -> None:
        barrier.wait()
        got = store.claim("site-a", f"agent-{index}", TTL, T0)
        if got is not None:
            won.append(got.job.job_id)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert won == [job_id]


def test_lease_renewal_and_running_check_the_epoch(store: Store) -> None:
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0)
    assert got is not None
    with pytest.raises(StaleEpoch):
        store.renew_lease(job_id, got.epoch + 1, TTL, T0)
    renewed = store.renew_lease(job_id, got.epoch, TTL, T0 + 30)
    assert renewed.lease_expires == T0 + 30 + TTL and renewed.version == got.job.version
    running = store.mark_running(job_id, got.epoch, "slurm-42", TTL, T0 + 31)
    assert running.state is State.RUNNING and running.native_id == "slurm-42"
    assert store.mark_running(job_id, got.epoch, None, TTL, T0 + 32).version == running.version
    with pytest.raises(StaleEpoch):
        store.check_lease(job_id, 99)


def test_expired_claim_is_requeued_and_the_old_epoch_goes_stale(store: Store) -> None:
    job_id = queued(store)
    first = store.claim("site-a", "agent-1", TTL, T0)
    assert first is not None
    report = store.expire(T0 + TTL + 1, queue_ttl=3600)
    assert report.requeued == (job_id,)
    assert store.get_job(job_id).state is State.QUEUED  # type: ignore[union-attr]
    with pytest.raises(StaleEpoch):
        store.renew_lease(job_id, first.epoch, TTL, T0 + TTL + 2)
    second = store.claim("site-a", "agent-2", TTL, T0 + TTL + 2)
    assert second is not None and second.epoch == first.epoch + 1


def test_claim_itself_requeues_expired_claims_of_its_site(store: Store) -> None:
    job_id = queued(store)
    store.claim("site-a", "agent-1", TTL, T0)
    again = store.claim("site-a", "agent-2", TTL, T0 + TTL + 1)
    assert again is not None and again.job.job_id == job_id and again.epoch == 2


def test_running_job_with_expired_lease_returns_to_its_agent_first(store: Store) -> None:
    lost = queued(store, now=T0)
    waiting = queued(store, now=T0 + 1)
    got = store.claim("site-a", "agent-1", TTL, T0 + 2)
    assert got is not None and got.job.job_id == lost
    store.mark_running(lost, got.epoch, None, TTL, T0 + 2)
    report = store.expire(T0 + TTL + 3, queue_ttl=3600)
    assert report.agent_lost == (lost,)
    assert store.get_job(lost).agent_lost  # type: ignore[union-attr]
    other = store.claim("site-a", "agent-2", TTL, T0 + TTL + 4)
    assert other is not None and other.job.job_id == waiting and not other.reattach
    back = store.claim("site-a", "agent-1", TTL, T0 + TTL + 5)
    assert back is not None and back.reattach and back.job.job_id == lost
    assert back.epoch == got.epoch + 1 and not back.job.agent_lost
    assert back.job.state is State.RUNNING


def test_same_epoch_renewal_clears_agent_lost(store: Store) -> None:
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0)
    assert got is not None
    store.mark_running(job_id, got.epoch, None, TTL, T0)
    store.expire(T0 + TTL + 1, queue_ttl=3600)
    back = store.renew_lease(job_id, got.epoch, TTL, T0 + TTL + 2)
    assert not back.agent_lost and back.state is State.RUNNING


# --- logs, results, completion --------------------------------------------------------------


def test_append_log_moves_the_size_only_from_the_held_offset(store: Store) -> None:
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0)
    assert got is not None
    job = store.append_log(job_id, "stdout", got.epoch, 0, 7, T0)
    assert job.logs == {"stdout": 7, "stderr": 0}
    with pytest.raises(OffsetMismatch) as mismatch:
        store.append_log(job_id, "stdout", got.epoch, 3, 10, T0)
    assert mismatch.value.headers == {"Log-Size": "7"}
    with pytest.raises(StaleEpoch):
        store.append_log(job_id, "stderr", got.epoch + 1, 0, 1, T0)


def test_complete_requires_every_listed_result_uploaded_with_its_digest(store: Store) -> None:
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0)
    assert got is not None
    data = b"result"
    declared = ResultRecord("sub/r.csv", len(data), sha(data))
    listed = [ResultRecord("sub/r.csv", len(data), sha(data), mode=0o600)]
    outcome = {"state": "completed", "exit_code": 0, "signal": None, "reason": ""}
    with pytest.raises(InputsIncomplete):
        store.complete(job_id, got.epoch, outcome, listed, [], T0)
    store.set_result_upload(job_id, got.epoch, ResultRecord(**{**declared.__dict__, "received": 3}),
                            0, T0)  # fmt: skip
    with pytest.raises(OffsetMismatch):
        store.set_result_upload(job_id, got.epoch, declared, 1, T0)
    with pytest.raises(InputsIncomplete):
        store.complete(job_id, got.epoch, outcome, listed, [], T0)
    full = ResultRecord(**{**declared.__dict__, "received": 6})
    store.set_result_upload(job_id, got.epoch, full, 3, T0)
    wrong = [ResultRecord("sub/r.csv", len(data), sha(b"other!"))]
    with pytest.raises(ChecksumMismatch):
        store.complete(job_id, got.epoch, outcome, wrong, [], T0)
    done = store.complete(job_id, got.epoch, outcome, listed,
                          [{"name": "x", "reason": "symlink"}], T0 + 1)  # fmt: skip
    assert done.state is State.FINISHED and done.finished_at == T0 + 1
    assert done.document()["results"] == [
        {"name": "sub/r.csv", "size": 6, "sha256": sha(data), "mode": 0o600}]
    assert done.document()["skipped"] == [{"name": "x", "reason": "symlink"}]
    assert store.complete(job_id, got.epoch, outcome, listed, [], T0 + 2) == done
    with pytest.raises(InvalidState):
        store.renew_lease(job_id, got.epoch, TTL, T0 + 3)


def test_result_declaration_changes_only_from_offset_zero(store: Store) -> None:
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0)
    assert got is not None
    store.set_result_upload(job_id, got.epoch, ResultRecord("r", 10, sha(b"a"), received=5), 0, T0)
    with pytest.raises(StateConflict):
        store.set_result_upload(job_id, got.epoch, ResultRecord("r", 8, sha(b"b"), received=8),
                                5, T0)  # fmt: skip
    new = ResultRecord("r", 8, sha(b"b"), received=2)
    replaced = store.set_result_upload(job_id, got.epoch, new, 0, T0)
    assert replaced.result("r") == ResultRecord("r", 8, sha(b"b"), received=2)


def test_cancelled_outcome_ends_the_job_as_cancelled(store: Store) -> None:
    job_id = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0)
    assert got is not None
    requested = store.cancel(job_id, T0)
    assert requested.cancel_requested and requested.state is State.CLAIMED
    outcome = {"state": "cancelled", "exit_code": None, "signal": 15, "reason": "cancel"}
    assert store.complete(job_id, got.epoch, outcome, [], [], T0).state is State.CANCELLED


# --- cancel, ack, expiry, retention ---------------------------------------------------------


def test_cancel_of_unclaimed_or_lost_jobs_ends_them_at_once(store: Store) -> None:
    created, _ = store.create_job(spec(), T0)
    assert store.cancel(created.job_id, T0).state is State.CANCELLED
    job_id = queued(store)
    done = store.cancel(job_id, T0)
    assert done.state is State.CANCELLED and done.outcome["state"] == "cancelled"  # type: ignore[index]
    assert store.cancel(job_id, T0 + 1) == done  # a final job is returned unchanged
    lost = queued(store)
    got = store.claim("site-a", "agent-1", TTL, T0)
    assert got is not None and got.job.job_id == lost
    store.mark_running(lost, got.epoch, None, TTL, T0)
    store.expire(T0 + TTL + 1, 3600)
    assert store.cancel(lost, T0 + TTL + 2).state is State.CANCELLED


def test_cancel_requested_on_an_expired_claim_ends_it(store: Store) -> None:
    job_id = queued(store)
    store.claim("site-a", "agent-1", TTL, T0)
    store.cancel(job_id, T0 + 1)
    report = store.expire(T0 + TTL + 1, 3600)
    assert report.cancelled == (job_id,)
    assert store.get_job(job_id).state is State.CANCELLED  # type: ignore[union-attr]


def test_unclaimed_and_unsubmitted_jobs_expire_with_a_reason(store: Store) -> None:
    waiting = queued(store, site="site-z", now=T0)
    abandoned, _ = store.create_job(spec(), T0)
    fresh = queued(store, now=T0 + 3000)
    report = store.expire(T0 + 3601, queue_ttl=3600)
    assert set(report.expired) == {waiting, abandoned.job_id}
    outcome = store.get_job(waiting).outcome  # type: ignore[union-attr]
    assert outcome is not None and outcome["state"] == "lost"
    assert outcome["reason"] == "no agent of site site-z claimed it within 1h"
    assert "not uploaded and submitted" in store.get_job(abandoned.job_id).outcome["reason"]  # type: ignore[index,union-attr]
    assert store.get_job(fresh).state is State.QUEUED  # type: ignore[union-attr]


def test_ack_marks_results_deleted_and_retention_lists_old_jobs(store: Store) -> None:
    job_id = queued(store)
    with pytest.raises(InvalidState):
        store.ack(job_id, T0)
    store.cancel(job_id, T0 + 10)
    acked = store.ack(job_id, T0 + 11)
    assert acked.acked and acked.results_deleted and not acked.document()["results_available"]
    assert store.final_jobs_before(T0 + 10) == []
    assert store.final_jobs_before(T0 + 11) == [job_id]
    store.delete_job(job_id)
    assert store.get_job(job_id) is None


def test_every_change_is_reported_after_commit(store: Store, changes: Changes) -> None:
    job_id = queued(store)
    assert changes.jobs.count(job_id) >= 2 and changes.sites == ["site-a"]
    before = len(changes.jobs)
    with pytest.raises(StaleEpoch):
        store.renew_lease(job_id, 5, TTL, T0)
    assert len(changes.jobs) == before  # a refused write reports nothing


def test_queue_stats_and_agents_seen(store: Store) -> None:
    queued(store, now=T0)
    queued(store, now=T0 + 5)
    store.claim("site-a", "agent-1", TTL, T0 + 6)
    stats = store.queue_stats()
    assert [(s.site, s.queued, s.claimed, s.oldest_queued_at) for s in stats] == [
        ("site-a", 1, 1, T0 + 5)]
    assert [(a.site, a.agent_id, a.last_seen) for a in store.agents_seen()] == [
        ("site-a", "agent-1", T0 + 6)]


# --- the original API (broker.legacy) ---------------------------------------------------------

CALC_INFO = {"command": "run.sh", "remote-site": "site-a", "parameters": "",
             "parameter_files": {}, "result_files": {"out.txt": {}}}  # fmt: skip
POLLER = "legacy:0123456789ab"


def legacy_queued(store: Store, now: float = T0) -> str:
    job = store.create_legacy_job(spec(), CALC_INFO, now)
    store.submit(job.job_id, now)
    return job.job_id


def test_legacy_job_is_created_with_its_record_and_never_reuses_an_id(store: Store) -> None:
    wanted = spec(inputs=(InputSpec("in.dat", 0, sha(b"")),))
    job = store.create_legacy_job(wanted, CALC_INFO, T0)
    assert job.state is State.CREATED and job.version == 1 and job.inputs[0].complete
    record = store.get_legacy(job.job_id)
    assert record is not None and record.calc_info == CALC_INFO
    assert (record.progress, record.status, record.poller, record.epoch) == (None, None, None, 0)
    with pytest.raises(StateConflict):
        store.create_legacy_job(wanted, CALC_INFO, T0)
    assert store.get_legacy(queued(store)) is None  # a job of the new API has none yet


def test_queued_job_ids_are_the_sites_queue_oldest_first(store: Store) -> None:
    first = legacy_queued(store, T0)
    second = queued(store, now=T0 + 1)
    queued(store, site="site-b", now=T0 + 2)
    store.create_legacy_job(spec(), CALC_INFO, T0 + 3)  # created, not queued
    assert store.queued_job_ids("site-a", 10) == [first, second]
    assert store.queued_job_ids("site-a", 1) == [first]


def test_legacy_claim_leases_a_queued_job_to_one_poller(store: Store) -> None:
    job_id = legacy_queued(store)
    with pytest.raises(InvalidState):
        store.legacy_claim(job_id, "site-b", POLLER, CALC_INFO, TTL, T0)
    job = store.legacy_claim(job_id, "site-a", POLLER, CALC_INFO, TTL, T0 + 1)
    assert job.state is State.CLAIMED and job.agent_id == POLLER and job.lease_epoch == 1
    assert job.lease_expires == T0 + 1 + TTL
    record = store.get_legacy(job_id)
    assert record is not None and (record.progress, record.poller, record.epoch) == (
        "sending params", POLLER, 1)
    with pytest.raises(AlreadyClaimed):
        store.legacy_claim(job_id, "site-a", "legacy:other", CALC_INFO, TTL, T0 + 2)
    assert store.claim("site-a", "agent-1", TTL, T0 + 2) is None
    assert [(a.agent_id, a.last_seen) for a in store.agents_seen()] == [
        ("agent-1", T0 + 2), (POLLER, T0 + 1)]


def test_legacy_claim_gives_a_job_of_the_new_api_its_record(store: Store) -> None:
    job_id = queued(store)
    store.legacy_claim(job_id, "site-a", POLLER, CALC_INFO, TTL, T0)
    record = store.get_legacy(job_id)
    assert record is not None and record.calc_info == CALC_INFO and record.poller == POLLER


def test_legacy_claim_takes_a_job_whose_claim_lapsed(store: Store) -> None:
    job_id = queued(store)
    store.claim("site-a", "agent-1", TTL, T0)
    job = store.legacy_claim(job_id, "site-a", POLLER, CALC_INFO, TTL, T0 + TTL + 1)
    assert job.agent_id == POLLER and job.lease_epoch == 2


def test_legacy_steps_follow_the_progress_of_the_poller_holding_the_job(store: Store) -> None:
    job_id = legacy_queued(store)
    claimed = store.legacy_claim(job_id, "site-a", POLLER, CALC_INFO, TTL, T0)
    step = store.legacy_step(job_id, POLLER, expect={"sending params"}, progress="complete send",
                             lease_ttl=TTL, now=T0 + 1)  # fmt: skip
    assert step.version > claimed.version and step.lease_expires == T0 + 1 + TTL
    assert step.state is State.CLAIMED
    with pytest.raises(InvalidState):
        store.legacy_step(job_id, POLLER, expect={"calc end"}, progress="getting return",
                          lease_ttl=TTL, now=T0 + 2)  # fmt: skip
    with pytest.raises(StaleEpoch):
        store.legacy_step(job_id, "legacy:other", expect={"complete send"}, progress="running",
                          lease_ttl=TTL, now=T0 + 2)  # fmt: skip
    running = store.legacy_step(job_id, POLLER, expect={"complete send"}, progress="running",
                                lease_ttl=TTL, now=T0 + 3, running=True)  # fmt: skip
    assert running.state is State.RUNNING
    store.legacy_step(job_id, POLLER, expect={"running"}, progress="calc end", lease_ttl=TTL,
                      now=T0 + 4, status="completed")  # fmt: skip
    store.legacy_step(job_id, POLLER, expect={"calc end"}, progress="getting return",
                      lease_ttl=TTL, now=T0 + 5,
                      result_types={"out.txt": ("text/plain;", "charset=us-ascii")})  # fmt: skip
    record = store.get_legacy(job_id)
    assert record is not None
    assert (record.progress, record.status) == ("getting return", "completed")
    assert record.result_types == {"out.txt": ("text/plain;", "charset=us-ascii")}
    outcome = {"state": "completed", "exit_code": 0, "signal": None, "reason": ""}
    store.complete(job_id, running.lease_epoch, outcome, [], [], T0 + 6)
    with pytest.raises(InvalidState):
        store.legacy_step(job_id, POLLER, expect={"getting return"}, progress="got return",
                          lease_ttl=TTL, now=T0 + 7)  # fmt: skip


def test_a_new_claim_starts_the_legacy_progress_over(store: Store) -> None:
    job_id = legacy_queued(store)
    store.legacy_claim(job_id, "site-a", POLLER, CALC_INFO, TTL, T0)
    store.legacy_step(job_id, POLLER, expect={"sending params"}, progress="complete send",
                      lease_ttl=TTL, now=T0, status="abnormal",
                      result_types={"out.txt": ("Error", "none")})  # fmt: skip
    store.expire(T0 + TTL + 1, queue_ttl=3600)  # the claim lapsed: queued again
    store.legacy_claim(job_id, "site-a", "legacy:other", CALC_INFO, TTL, T0 + TTL + 2)
    record = store.get_legacy(job_id)
    assert record is not None and record.poller == "legacy:other" and record.epoch == 2
    assert (record.progress, record.status, record.result_types) == ("sending params", None, {})
    with pytest.raises(StaleEpoch):
        store.legacy_step(job_id, POLLER, expect={"sending params"}, progress="complete send",
                          lease_ttl=TTL, now=T0 + TTL + 3)  # fmt: skip


def test_a_refused_write_leaves_nothing_behind(store: Store, changes: Changes) -> None:
    lapsed = queued(store)
    store.claim("site-a", "agent-1", TTL, T0)
    other_site = queued(store, site="site-b")
    before = (store.get_job(lapsed), len(changes.jobs), store.agents_seen())
    # The claim would requeue the lapsed claim of site-a first, then refuses the job.
    with pytest.raises(InvalidState):
        store.legacy_claim(other_site, "site-a", POLLER, CALC_INFO, TTL, T0 + TTL + 1)
    assert (store.get_job(lapsed), len(changes.jobs), store.agents_seen()) == before


def test_deleting_a_job_deletes_its_legacy_record(store: Store) -> None:
    job = store.create_legacy_job(spec(), CALC_INFO, T0)
    store.delete_job(job.job_id)
    assert store.get_job(job.job_id) is None and store.get_legacy(job.job_id) is None


# --- tokens ----------------------------------------------------------------------------------


def test_tokens_are_stored_by_hash_and_revoked_once(store: Store) -> None:
    record = TokenRecord("0123456789ab", sha(b"mbt_secret"), Scope.SITE, "site-a", T0)
    store.create_token(record)
    with pytest.raises(StateConflict):
        store.create_token(record)
    assert store.get_token("0123456789ab") == record
    assert store.get_token("ffffffffffff") is None
    assert store.revoke_token("0123456789ab", T0 + 1)
    assert not store.revoke_token("0123456789ab", T0 + 2)
    assert store.get_token("0123456789ab").revoked  # type: ignore[union-attr]
    assert [t.token_id for t in store.list_tokens()] == ["0123456789ab"]


def test_a_tokens_expiry_is_kept_by_every_backend(store: Store) -> None:
    expiring = TokenRecord("aaaaaaaaaaaa", sha(b"mbt_a"), Scope.CLIENT, "c", T0, expires_at=T0 + 30)
    lasting = TokenRecord("bbbbbbbbbbbb", sha(b"mbt_b"), Scope.CLIENT, "d", T0)
    store.create_token(expiring)
    store.create_token(lasting)
    kept = {t.token_id: t for t in store.list_tokens()}
    assert kept["aaaaaaaaaaaa"].expires_at == T0 + 30
    assert kept["bbbbbbbbbbbb"].expires_at is None
    assert not kept["aaaaaaaaaaaa"].expired(T0 + 29.9)
    assert kept["aaaaaaaaaaaa"].expired(T0 + 30)
    assert not kept["bbbbbbbbbbbb"].expired(T0 + 10**9)


def test_sqlite_keeps_only_the_hash_on_disk(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.sqlite3"))
    store.create_token(TokenRecord("0123456789ab", sha(b"mbt_plain"), Scope.ADMIN, "admin", T0))
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"mbt_plain" not in raw
