"""Two stores on one PostgreSQL database, as two broker instances: a commit on one wakes the
long polls of the other (LISTEN/NOTIFY), a rolled-back write wakes nobody, and a feed that
lost its connection wakes every long poll once it listens again."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator

import psycopg
import pytest

from broker.errors import InvalidState
from broker.notify import Notifier, site_key
from broker.store import NewJob, Store
from broker.store.locations import open_store, parse_store_url
from broker.store.postgres import PostgresStore
from broker.store.postgres_notify import CHANNEL, parse
from tests.support.postgres import empty

T0 = 1_000_000.0


class Heard:
    def __init__(self) -> None:
        self.jobs: list[str] = []
        self.sites: list[str] = []
        self.event = threading.Event()
        self.resyncs = 0

    def __call__(self, jobs: Iterable[str], sites: Iterable[str]) -> None:
        self.jobs.extend(jobs)
        self.sites.extend(sites)
        self.event.set()

    def resync(self) -> None:
        self.resyncs += 1
        self.event.set()


@pytest.fixture
def pair(postgres_url: str) -> Iterator[tuple[Store, Store, Heard, Heard]]:
    empty(postgres_url)
    heard_a, heard_b = Heard(), Heard()
    location = parse_store_url(postgres_url)
    a = open_store(location, heard_a, pool_size=2, resync=heard_a.resync)
    b = open_store(location, heard_b, pool_size=2, resync=heard_b.resync)
    for store in (a, b):
        assert isinstance(store, PostgresStore) and store.feed is not None
        assert store.feed.listening.wait(10)
    yield a, b, heard_a, heard_b
    a.close()
    b.close()


def new_job(site: str = "site-a") -> NewJob:
    return NewJob(job_id=str(uuid.uuid4()), client="node1", site=site, command="fatigue",
                  params={}, inputs=())  # fmt: skip


def test_a_job_submitted_on_one_instance_wakes_a_claim_waiting_on_the_other(
    pair: tuple[Store, Store, Heard, Heard], postgres_url: str
) -> None:
    a = pair[0]
    notifier = Notifier(max_waiters=10, max_waiters_per_owner=10)  # instance B's long polls
    b = open_store(parse_store_url(postgres_url), notifier.changed, pool_size=2,
                   resync=notifier.wake_all)  # fmt: skip
    try:
        assert isinstance(b, PostgresStore) and b.feed is not None and b.feed.listening.wait(10)
        with notifier.listen([site_key("site-a")], "token", seconds=30) as waiter:
            waiter.rearm()
            assert b.claim("site-a", "agent-1", 60.0, T0) is None  # nothing yet: it waits
            job, _ = a.create_job(new_job(), T0)
            a.submit(job.job_id, T0)
            assert waiter.wait(10), "the claim on B was not woken by A's commit"
        claim = b.claim("site-a", "agent-1", 60.0, T0)
        assert claim is not None and claim.job.job_id == job.job_id
    finally:
        b.close()


def test_own_changes_are_not_heard_twice_and_other_changes_arrive(
    pair: tuple[Store, Store, Heard, Heard],
) -> None:
    a, _, heard_a, heard_b = pair
    job, _ = a.create_job(new_job(), T0)
    a.submit(job.job_id, T0)
    deadline = time.monotonic() + 10
    while "site-a" not in heard_b.sites and time.monotonic() < deadline:
        heard_b.event.wait(0.5)
    assert job.job_id in heard_b.jobs and "site-a" in heard_b.sites
    assert heard_a.jobs.count(job.job_id) == 2  # create and submit, each once, told locally


def test_a_rolled_back_write_wakes_nobody(pair: tuple[Store, Store, Heard, Heard]) -> None:
    a, _, _, heard_b = pair
    assert isinstance(a, PostgresStore)
    job, _ = a.create_job(new_job(), T0)
    time.sleep(0.5)  # let the notification of the create arrive
    heard_b.jobs.clear()
    with pytest.raises(InvalidState), a._transaction() as tx:
        tx.touch(job.job_id, "site-a")  # a write that changed the job, then was refused
        raise InvalidState("refused after the change")
    a.submit(job.job_id, T0)  # a committed write after it, heard by B
    deadline = time.monotonic() + 10
    while not heard_b.sites and time.monotonic() < deadline:
        heard_b.event.wait(0.5)
    assert heard_b.jobs == [job.job_id]  # the submit's only: the rolled-back one never came


def test_a_feed_that_lost_its_connection_wakes_every_poll_once_back(
    pair: tuple[Store, Store, Heard, Heard], postgres_url: str,
) -> None:
    _, b, _, heard_b = pair
    assert isinstance(b, PostgresStore) and b.feed is not None
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # The server ends the feed's session, as a restart of PostgreSQL does.
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE query LIKE %s AND pid <> pg_backend_pid()", (f"LISTEN {CHANNEL}%",))
    deadline = time.monotonic() + 15
    while heard_b.resyncs == 0 and time.monotonic() < deadline:
        heard_b.event.wait(0.5)
        heard_b.event.clear()
    assert heard_b.resyncs >= 1
    assert b.feed.listening.wait(10)


def test_payloads_of_others_only() -> None:
    assert parse('{"o": "me", "j": ["x"], "s": []}', "me") is None
    # An older instance's list of sites: work for any claim of each.
    assert parse('{"o": "them", "j": ["x"], "s": ["s"]}', "me") == (["x"], {"s": None})
    assert parse('{"o": "them", "j": [], "s": {"s": ["mesh"], "t": null}}', "me") == (
        [], {"s": {"mesh"}, "t": None})
    assert parse('{"o": "them", "j": [], "s": {"s": [3]}}', "me") is None
    assert parse("not json", "me") is None
    assert parse('{"o": "them", "j": [1], "s": []}', "me") is None


def test_another_instances_job_wakes_only_a_claim_that_takes_its_command(
    pair: tuple[Store, Store, Heard, Heard], postgres_url: str
) -> None:
    """A job of command "fatigue" submitted on A: on B the claim that waits longest lists only
    "mesh", so it must stay asleep and take nothing; the one that lists "fatigue" is woken and
    takes it (the job row names its agent)."""
    a = pair[0]
    notifier = Notifier(max_waiters=10, max_waiters_per_owner=10)  # instance B's long polls
    b = open_store(parse_store_url(postgres_url), notifier.changed, pool_size=2,
                   resync=notifier.wake_all)  # fmt: skip
    try:
        assert isinstance(b, PostgresStore) and b.feed is not None and b.feed.listening.wait(10)
        with notifier.listen([site_key("site-a")], "t1", 30, commands={"mesh"}) as mesh, \
                notifier.listen([site_key("site-a")], "t2", 30, commands={"fatigue"}) as fat:
            for waiter in (mesh, fat):
                waiter.rearm()
            job, _ = a.create_job(new_job(), T0)
            a.submit(job.job_id, T0)
            assert fat.wait(10), "the claim on B that takes the command was not woken"
            assert not mesh.event.is_set(), "a claim that does not take the job was woken"
            assert b.claim("site-a", "mesh-agent", 60.0, T0, commands={"mesh"}) is None
            claim = b.claim("site-a", "fatigue-agent", 60.0, T0, commands={"fatigue"})
        assert claim is not None and claim.job.job_id == job.job_id
        stored = a.get_job(job.job_id)
        assert stored is not None and stored.agent_id == "fatigue-agent"
    finally:
        b.close()
