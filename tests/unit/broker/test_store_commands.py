"""A claim that lists its agent's commands, over every store backend: it takes only jobs of
those commands (the rest stay queued for an original poller or another agent), re-attaches to
its lost jobs whatever their command, and the store reports each new job's command so that
only a claim that takes it is woken."""

from __future__ import annotations

import threading
import uuid

from broker.store import NewJob, State, Store
from tests.unit.broker.test_store import T0, TTL, Changes, changes, store

__all__ = ["changes", "store"]  # fixtures used here by name

# An original whitelist's command string: matched character for character, quotes and all.
LEGACY = "/opt/Abaqus/Commands/abaqus job='a b' %s ? \"x\" \\ 計算"


def queued_with(store: Store, command: str, now: float = T0, site: str = "site-a") -> str:
    spec = NewJob(job_id=str(uuid.uuid4()), client="node1", site=site, command=command,
                  params={}, inputs=())  # fmt: skip
    job, _ = store.create_job(spec, now)
    store.submit(job.job_id, now)
    return job.job_id


def test_a_claim_takes_the_oldest_job_of_its_commands_only(store: Store) -> None:
    poller_only = queued_with(store, "/opt/x/run.sh", T0)
    first = queued_with(store, "fatigue", T0 + 1)
    legacy = queued_with(store, LEGACY, T0 + 2)
    got = store.claim("site-a", "agent-1", TTL, T0 + 3, commands={"fatigue", LEGACY})
    assert got is not None and got.job.job_id == first and got.job.spec.command == "fatigue"
    got = store.claim("site-a", "agent-1", TTL, T0 + 3, commands=[LEGACY, "fatigue"])
    assert got is not None and got.job.job_id == legacy and got.job.spec.command == LEGACY
    assert store.claim("site-a", "agent-1", TTL, T0 + 3, commands={"fatigue", LEGACY}) is None
    left = store.get_job(poller_only)
    assert left is not None and left.state is State.QUEUED and left.lease_epoch == 0
    assert left.version == 2  # created, queued: the refused claims changed nothing
    # A claim without the list (an older agent) still takes any job, the oldest first.
    anyone = store.claim("site-a", "agent-2", TTL, T0 + 4)
    assert anyone is not None and anyone.job.job_id == poller_only


def test_commands_match_exactly(store: Store) -> None:
    job_id = queued_with(store, "/opt/x/run.sh")
    for near in ("/opt/x/run.sh ", "/OPT/x/run.sh", "/opt/x/run", "run.sh", "%", "_"):
        assert store.claim("site-a", "agent-1", TTL, T0, commands={near}) is None
    got = store.claim("site-a", "agent-1", TTL, T0, commands={"/opt/x/run.sh"})
    assert got is not None and got.job.job_id == job_id


def test_the_list_filters_within_the_site_only(store: Store) -> None:
    queued_with(store, "fatigue", T0, site="site-b")
    assert store.claim("site-a", "agent-1", TTL, T0 + 1, commands={"fatigue"}) is None


def test_a_lost_job_comes_back_to_its_agent_whatever_the_list(store: Store) -> None:
    lost = queued_with(store, "fatigue", T0)
    got = store.claim("site-a", "agent-1", TTL, T0 + 1, commands={"fatigue"})
    assert got is not None
    store.mark_running(lost, got.epoch, "42", TTL, T0 + 1)
    store.expire(T0 + TTL + 2, queue_ttl=3600)
    # The agent restarted with a config that no longer offers the command: it must still
    # follow the job it started, or its results would never be delivered.
    back = store.claim("site-a", "agent-1", TTL, T0 + TTL + 3, commands={"other"})
    assert back is not None and back.reattach and back.job.job_id == lost


def test_changes_name_the_command_of_new_claimable_work(store: Store, changes: Changes) -> None:
    job_id = queued_with(store, LEGACY, T0)
    assert changes.claimable[-1] == {"site-a": frozenset({LEGACY})}
    got = store.claim("site-a", "agent-1", TTL, T0 + 1)
    assert got is not None
    store.expire(T0 + TTL + 2, queue_ttl=3600)  # the lapsed claim is queued again
    assert changes.claimable[-1] == {"site-a": frozenset({LEGACY})}
    got = store.claim("site-a", "agent-1", TTL, T0 + TTL + 3)
    assert got is not None
    store.release_claim(job_id, got.epoch, T0 + TTL + 4)
    assert changes.claimable[-1] == {"site-a": frozenset({LEGACY})}
    got = store.claim("site-a", "agent-1", TTL, T0 + TTL + 5)
    assert got is not None
    store.mark_running(job_id, got.epoch, None, TTL, T0 + TTL + 5)
    store.expire(T0 + 3 * TTL, queue_ttl=3600)
    # A lost running job concerns its agent, whatever that claim lists: any claim may look.
    assert changes.claimable[-1] == {"site-a": None}


def test_concurrent_claims_each_take_only_their_commands(store: Store) -> None:
    jobs = {queued_with(store, "a" if i % 2 else "b", T0 + i): "a" if i % 2 else "b"
            for i in range(8)}  # fmt: skip
    barrier, lock = threading.Barrier(8), threading.Lock()
    taken: list[tuple[str, str]] = []

    def drain(index: int) -> None:
        mine = "a" if index % 2 else "b"
        barrier.wait()
        while (got := store.claim("site-a", f"agent-{index}", TTL, T0 + 9,
                                  commands={mine})) is not None:  # fmt: skip
            with lock:
                taken.append((got.job.job_id, mine))

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(jobs.items())  # each job once, by an agent that runs it


def test_a_job_nobody_else_runs_is_taken_so_the_site_can_reject_it(store: Store) -> None:
    whitelisted = queued_with(store, "/opt/x/run.sh", T0)  # an original poller's command
    unknown = queued_with(store, "rm", T0 + 1)  # nobody runs it
    mine = queued_with(store, "fatigue", T0 + 2)
    others = {"/opt/x/run.sh"}
    got = store.claim("site-a", "agent-1", TTL, T0 + 3, commands={"fatigue"}, others=others)
    assert got is not None and got.job.job_id == unknown  # the oldest the agent may take
    got = store.claim("site-a", "agent-1", TTL, T0 + 3, commands={"fatigue"}, others=others)
    assert got is not None and got.job.job_id == mine
    assert store.claim("site-a", "agent-1", TTL, T0 + 3, commands={"fatigue"},
                       others=others) is None  # fmt: skip
    left = store.get_job(whitelisted)
    assert left is not None and left.state is State.QUEUED
    # An empty list of others: every job is the agent's to run or to reject.
    got = store.claim("site-a", "agent-2", TTL, T0 + 4, commands={"fatigue"}, others=())
    assert got is not None and got.job.job_id == whitelisted
