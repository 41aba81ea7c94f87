"""Waking long polls the moment the job or site they wait for changes, within one process.

A waiter registers under its keys (``job:<id>``, ``site:<name>``) *before* it checks the
database, and clears its event before every check; the store reports each committed change
here. So a change that lands between a check and the wait still wakes the waiter: no wakeup is
ever lost, and nobody polls the database on a timer.

Within one process (one gunicorn worker, many threads) the store's own commits are enough.
Several instances on one PostgreSQL database hear each other's commits through LISTEN/NOTIFY
(``broker.store.postgres_notify``), which calls ``changed`` here as well, and ``wake_all``
after a gap in which some may have been missed.

The per-token limit is counted here for this instance; on a store several instances share
(PostgreSQL) a poll that waits also holds a slot in the database (``broker.store.
postgres_slots``, taken by ``api_base.wait_for``), so the limit holds for the token on all
instances together, and a killed instance's slots lapse by themselves.

Long polls hold a server thread each, so the number of waiters is bounded: per token
(``RateLimited``, 429) and in all (``Unavailable``, 503), always leaving threads for ordinary
requests. This module never sleeps in a loop and never touches the database.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping

from broker.errors import RateLimited, Unavailable

# A wakeup for site work: the site's key and the commands of the work (None: any claim's).
Wake = tuple[str, Collection[str] | None]


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def site_key(site: str) -> str:
    return f"site:{site}"


class Waiter:
    """One long poll's event; ``wait`` returns True when something it listens to changed.

    ``commands``: a claim that takes only jobs of these commands is woken only for them (None:
    for any job of its site); with ``others``, also for a command in neither list (one that
    nobody else at the site runs: the claim takes it, and its site rejects it)."""

    def __init__(
        self,
        deadline: float,
        commands: frozenset[str] | None = None,
        others: frozenset[str] | None = None,
    ) -> None:
        self.event = threading.Event()
        self.deadline = deadline
        self.commands = commands
        self.others = others
        # The site work this waiter alone was woken for and has not looked at yet
        # ((key, commands)); ``looking``: what its current check is for. Whatever is left
        # when it ends is passed on, so a wakeup is never lost with a claim that took nothing.
        self.woken: list[Wake] = []
        self.looking: list[Wake] = []

    def takes(self, commands: Collection[str] | None) -> bool:
        """Whether work of ``commands`` (None: of any command) may be for this waiter."""
        if self.commands is None or commands is None:
            return True
        if self.others is not None and not self.others.issuperset(commands):
            return True  # a command in neither list is taken too (see the store's claim)
        return not self.commands.isdisjoint(commands)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def rearm(self) -> None:
        """Forget earlier wakeups; call before each check of the database."""
        self.event.clear()
        self.looking, self.woken = self.woken, []

    def looked(self) -> None:
        """The check after ``rearm`` ran to its end: it took the work it was woken for, or
        found it taken by another claim. A check that raised keeps its wakeups, to pass on."""
        self.looking = []

    def unused(self) -> list[Wake]:
        return [*self.looking, *self.woken]

    def wait(self, at_most: float | None = None) -> bool:
        """Block until a change, the deadline or ``at_most`` seconds; True only on a change."""
        remaining = self.remaining()
        if at_most is not None:
            remaining = min(remaining, at_most)
        return remaining > 0 and self.event.wait(remaining)


class Notifier:
    def __init__(self, max_waiters: int, max_waiters_per_owner: int) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, dict[Waiter, None]] = {}  # ordered: the longest waiting first
        self._per_owner: dict[str, int] = {}
        self._total = 0
        self.max_waiters = max_waiters
        self.max_waiters_per_owner = max_waiters_per_owner
        self._closing = False

    def shut_down(self) -> None:
        """End every long poll now (each answers with what it has) and every later one at once.

        Called when the server stops: otherwise each waiting agent holds a thread until its
        wait runs out, and the server's graceful stop would wait for them all.
        """
        with self._lock:
            self._closing = True
            waiters = [w for group in self._waiters.values() for w in group]
        for waiter in waiters:
            waiter.deadline = 0.0
            waiter.event.set()

    def wake_all(self) -> None:
        """Wake every long poll to look at the store once more (changes may have been missed)."""
        with self._lock:
            waiters = [w for group in self._waiters.values() for w in group]
        for waiter in waiters:
            waiter.event.set()

    def changed(
        self,
        job_ids: Iterable[str],
        sites: Iterable[str] | Mapping[str, Collection[str] | None],
    ) -> None:
        """The store's change listener: wake everyone waiting on these jobs, and for each site
        (and each command of its new work, when ``sites`` maps a site to them) one claim that
        is not awake yet and takes that work.

        A new job can go to one agent only: waking every agent of the site would have each of
        them open a write transaction for nothing (a thundering herd). A claim that wakes and
        finds no job simply waits again; one whose wait ends before it looks has already
        returned, and the agent's next claim finds the job at once. A claim that does not take
        a job's command is never woken for it: a job only an original poller runs would
        otherwise wake an agent's claim in vain, and leave the agent that runs the next job
        asleep.
        """
        claimable = sites if isinstance(sites, Mapping) else dict.fromkeys(sites)
        wakes: list[Wake] = []
        for site, commands in claimable.items():
            wanted = [None] if commands is None else [[c] for c in sorted(commands)]
            wakes.extend((site_key(site), w) for w in wanted)
        with self._lock:
            waiters = [w for j in job_ids for w in self._waiters.get(job_key(j), ())]
            self._choose(wakes, waiters)
        for waiter in waiters:
            waiter.event.set()

    def _choose(self, wakes: list[Wake], waiters: list[Waiter], but: Waiter | None = None) -> None:
        """Add to ``waiters`` one claim asleep per wake that takes its work (not ``but``)."""
        for key, commands in wakes:
            first = self._first_asleep(key, commands, [*waiters, *([but] if but else [])])
            if first is not None:
                first.woken.append((key, commands))
                waiters.append(first)

    def pass_on(self, waiter: Waiter) -> None:
        """Hand the wakeups ``waiter`` did not use to the next claims that take that work."""
        with self._lock:
            chosen: list[Waiter] = []
            self._choose(waiter.unused(), chosen, but=waiter)
        for other in chosen:
            other.event.set()

    def _first_asleep(
        self, key: str, commands: Collection[str] | None, chosen: list[Waiter]
    ) -> Waiter | None:
        """The longest waiting of ``key``'s waiters that is not awake and takes ``commands``."""
        for waiter in self._waiters.get(key, ()):
            if not waiter.event.is_set() and waiter not in chosen and waiter.takes(commands):
                return waiter
        return None

    @contextlib.contextmanager
    def listen(
        self,
        keys: Iterable[str],
        owner: str,
        seconds: float,
        commands: Collection[str] | None = None,
        others: Collection[str] | None = None,
    ) -> Iterator[Waiter]:
        """Register a waiter for up to ``seconds`` under ``keys``, counted against ``owner``;
        ``commands`` and ``others``: the site work it wants (``Waiter.takes``)."""
        key_list = list(keys)
        wanted = None if commands is None else frozenset(commands)
        elsewhere = None if others is None else frozenset(others)
        waiter = Waiter(0.0 if self._closing else time.monotonic() + seconds, wanted, elsewhere)
        self._register(waiter, key_list, owner)
        try:
            yield waiter
        finally:
            self._unregister(waiter, key_list, owner)
            if waiter.unused():
                self.pass_on(waiter)

    def waiting(self) -> int:
        with self._lock:
            return self._total

    def _register(self, waiter: Waiter, keys: list[str], owner: str) -> None:
        with self._lock:
            if self._total >= self.max_waiters:
                raise Unavailable(
                    f"the broker holds its maximum of {self.max_waiters} long polls; retry",
                    retry_after=2,
                )
            if self._per_owner.get(owner, 0) >= self.max_waiters_per_owner:
                raise RateLimited(
                    f"this token already holds {self.max_waiters_per_owner} long polls; "
                    "wait for one to return before starting another",
                    retry_after=1,
                )
            self._total += 1
            self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
            for key in keys:
                self._waiters.setdefault(key, {})[waiter] = None

    def _unregister(self, waiter: Waiter, keys: list[str], owner: str) -> None:
        with self._lock:
            self._total -= 1
            left = self._per_owner[owner] - 1
            if left:
                self._per_owner[owner] = left
            else:
                del self._per_owner[owner]
            for key in keys:
                group = self._waiters.get(key)
                if group is not None:
                    group.pop(waiter, None)
                    if not group:
                        del self._waiters[key]
