"""In-process wakeups: no lost wakeup, only the right keys wake, and waiters are bounded."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from broker.errors import RateLimited, Unavailable
from broker.notify import Notifier, Waiter, job_key, site_key


def test_a_change_before_the_wait_is_not_lost() -> None:
    notifier = Notifier(10, 10)
    with notifier.listen([job_key("j1")], "t1", 30) as waiter:
        waiter.rearm()
        notifier.changed(["j1"], [])  # lands between the check and the wait
        assert waiter.wait() is True


def test_only_the_keys_listened_to_wake_a_waiter() -> None:
    notifier = Notifier(10, 10)
    with notifier.listen([site_key("a")], "t1", 0.05) as waiter:
        notifier.changed(["j1"], ["b"])
        assert waiter.wait() is False  # deadline passed without a change of site a
        notifier.changed([], ["a"])
        assert waiter.event.is_set()


def test_a_waiting_thread_is_woken_by_another_thread() -> None:
    notifier = Notifier(10, 10)
    registered, result = threading.Event(), []

    def wait() -> None:
        with notifier.listen([job_key("j")], "t", 30) as waiter:
            waiter.rearm()
            registered.set()
            result.append(waiter.wait())

    thread = threading.Thread(target=wait)
    thread.start()
    assert registered.wait(10)
    notifier.changed(["j"], [])
    thread.join(10)
    assert result == [True] and notifier.waiting() == 0


def test_waiters_are_bounded_per_token_and_in_all() -> None:
    notifier = Notifier(3, 2)
    with notifier.listen(["k"], "t1", 1), notifier.listen(["k"], "t1", 1):
        with pytest.raises(RateLimited) as limited, notifier.listen(["k"], "t1", 1):
            pass
        assert limited.value.headers["Retry-After"] == "1"
        with notifier.listen(["k"], "t2", 1), pytest.raises(Unavailable), \
                notifier.listen(["k"], "t3", 1):
            pass
    assert notifier.waiting() == 0


def test_shut_down_ends_waiting_and_later_long_polls() -> None:
    import threading

    from broker.notify import Notifier

    notifier = Notifier(max_waiters=10, max_waiters_per_owner=10)
    outcome: list[float] = []

    def poll() -> None:
        with notifier.listen(["site:x"], "agent", 50.0) as waiter:
            while waiter.wait():
                waiter.rearm()
            outcome.append(waiter.remaining())

    thread = threading.Thread(target=poll)
    thread.start()
    while notifier.waiting() == 0:
        threading.Event().wait(0.01)
    notifier.shut_down()
    thread.join(timeout=10)
    assert not thread.is_alive(), "a 50 s long poll must end when the server shuts down"
    assert outcome == [0.0]
    with notifier.listen(["site:x"], "agent", 50.0) as later:
        assert later.remaining() == 0.0 and later.wait() is False


def test_a_new_job_wakes_one_waiting_claim_of_its_site_not_all() -> None:
    from broker.notify import Notifier, job_key, site_key

    notifier = Notifier(max_waiters=10, max_waiters_per_owner=10)
    with (
        notifier.listen([site_key("s")], "a", 50.0) as first,
        notifier.listen([site_key("s")], "b", 50.0) as second,
        notifier.listen([job_key("j")], "c", 50.0) as status_1,
        notifier.listen([job_key("j")], "d", 50.0) as status_2,
    ):
        notifier.changed([], ["s"])
        assert (first.event.is_set(), second.event.is_set()) == (True, False)
        notifier.changed([], ["s"])  # the next job wakes the next claim, not the same one again
        assert second.event.is_set()
        notifier.changed(["j"], [])  # a change of a job wakes everyone watching it
        assert status_1.event.is_set() and status_2.event.is_set()


def test_a_claim_is_woken_only_for_work_of_its_commands() -> None:
    notifier = Notifier(10, 10)
    with notifier.listen([site_key("a")], "t1", 30, commands={"solve"}) as agent, \
            notifier.listen([site_key("a")], "t2", 30, commands={"probe", "mesh"}) as other, \
            notifier.listen([site_key("a")], "t3", 30) as older_agent:  # fmt: skip
        # A job only an original poller runs wakes no claim that lists its commands.
        notifier.changed([], {"a": {"/opt/x/run.sh"}})
        assert not agent.event.is_set() and not other.event.is_set()
        assert older_agent.event.is_set()  # a claim without the list takes any job
        older_agent.rearm()
        notifier.changed([], {"a": {"mesh"}})
        assert other.event.is_set() and not agent.event.is_set()
        assert not older_agent.event.is_set()  # one waiter per new job
        other.rearm()
        # Two commands in one commit: one claim for each, never the same twice.
        notifier.changed([], {"a": {"solve", "mesh"}})
        assert agent.event.is_set() and other.event.is_set() and not older_agent.event.is_set()


def test_work_for_any_claim_wakes_the_longest_waiting() -> None:
    notifier = Notifier(10, 10)
    with notifier.listen([site_key("a")], "t1", 30, commands={"solve"}) as first, \
            notifier.listen([site_key("a")], "t2", 30, commands={"mesh"}) as second:
        notifier.changed([], {"a": None})  # a lost running job: its agent must look
        assert first.event.is_set() and not second.event.is_set()
        notifier.changed([], ["a"])  # a plain list of sites means the same
        assert second.event.is_set()


def test_a_claim_that_takes_jobs_nobody_else_runs_is_woken_for_them() -> None:
    notifier = Notifier(10, 10)
    with notifier.listen([site_key("a")], "t1", 30, commands={"solve"},
                         others={"/opt/x/run.sh"}) as agent:  # fmt: skip
        notifier.changed([], {"a": {"/opt/x/run.sh"}})  # the original poller's: not ours
        assert not agent.event.is_set()
        notifier.changed([], {"a": {"rm"}})  # nobody runs it: the site rejects it
        assert agent.event.is_set()


def test_a_wakeup_the_woken_claim_does_not_use_goes_to_the_next_claim_that_takes_it() -> None:
    """The claim woken for a "solve" job ends without taking it (its check raised: its agent
    went away): the wakeup goes on to the next claim that takes "solve", never to one that
    does not, and is not lost."""
    notifier = Notifier(10, 10)
    with notifier.listen([site_key("a")], "t1", 30, commands={"mesh"}) as mesh, \
            notifier.listen([site_key("a")], "t2", 30, commands={"solve"}) as other:
        other.event.set()  # busy looking already: the new job's wakeup goes to the next
        with notifier.listen([site_key("a")], "t3", 30, commands={"solve"}) as gone:
            notifier.changed([], {"a": {"solve"}})
            assert gone.event.is_set() and not mesh.event.is_set()
            other.rearm()
            other.looked()  # its look found nothing: it waits again
            with contextlib.suppress(ConnectionError), gone_check(gone):
                raise ConnectionError("the agent went away")
            assert not other.event.is_set()  # still the gone claim's, until it ends
            with notifier.listen([site_key("a")], "t4", 30, commands={"solve"}):
                pass  # a claim that ends without ever being woken passes nothing on
            assert not other.event.is_set()
        assert other.event.is_set(), "the unused wakeup went on to the other solve claim"
        assert not mesh.event.is_set()


@contextlib.contextmanager
def gone_check(waiter: Waiter) -> Iterator[None]:
    """One check of a long poll, as ``api_base.wait_for`` runs it."""
    waiter.rearm()
    yield
    waiter.looked()


def test_a_claim_that_looked_passes_nothing_on() -> None:
    notifier = Notifier(10, 10)
    with notifier.listen([site_key("a")], "t1", 30, commands={"solve"}) as other:
        with notifier.listen([site_key("a")], "t2", 30, commands={"solve"}) as first:
            other.event.set()  # awake already: not chosen
            notifier.changed([], {"a": {"solve"}})
            assert first.event.is_set()
            first.rearm()
            first.looked()
            other.rearm()
        assert not other.event.is_set()
