"""Changes committed by other broker instances, through PostgreSQL's LISTEN/NOTIFY.

Each instance's long polls wait on its own in-process notifier (``broker.notify``). A write
on instance A tells A's notifier after its commit (``SQLStore._changed``) and, inside the same
transaction, publishes the changed jobs and sites on ``CHANNEL`` with ``pg_notify``: PostgreSQL
delivers a notification only if and when the transaction commits, so a rolled-back write wakes
nobody anywhere. ``ChangeFeed`` is one thread per instance with its own connection that
LISTENs and hands other instances' changes to the local notifier (its own come back too and
are dropped by their origin).

A notification sent while the feed is disconnected (the database restarted) is lost, so on
every reconnect the feed wakes every local long poll (``resync``): each looks at the database
once more and waits again. Nothing here polls the database on a timer, and a payload carries
job ids, site names and the command names of each site's new work only (never a parameter or
a program path): another instance wakes only a claim that takes that work
(``broker.notify.Waiter.takes``), as the instance that committed it does.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from broker.store.interface import ChangeListener
from broker.store.records import Claimable
from broker.store.sql_tx import Tx

log = logging.getLogger(__name__)

CHANNEL = "mint_broker_changes"
# pg_notify takes at most 8000 bytes: 100 job ids (36 characters each) stay well below.
IDS_PER_NOTICE = 100
# How long the feed blocks for a notification before it checks whether it should stop.
STOP_CHECK_SECONDS = 1.0
# Between reconnect attempts while the database is down.
RECONNECT_SECONDS = 1.0


def publish(tx: Tx, origin: str, jobs: Iterable[str], sites: Claimable) -> None:
    """Queue the changes for delivery when ``tx`` commits (PostgreSQL drops them otherwise).

    ``sites`` maps each site with new claimable work to its commands (None: work for any
    claim of the site); the payload keeps that map, so the other instances wake the claims
    that take the work and no other."""
    job_list = sorted(jobs)
    site_map = {site: None if commands is None else sorted(commands)
                for site, commands in sorted(sites.items())}  # fmt: skip
    for start in range(0, max(1, len(job_list)), IDS_PER_NOTICE):
        payload = {"o": origin, "j": job_list[start:start + IDS_PER_NOTICE],
                   "s": site_map if start == 0 else {}}  # fmt: skip
        tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, json.dumps(payload)))


def parse(payload: str, origin: str) -> tuple[list[str], Claimable] | None:
    """Another instance's (jobs, sites with the commands of their new work); None for our
    own or for anything malformed. A list of sites (an instance of an older release) means
    work for any claim of each."""
    try:
        notice: Any = json.loads(payload)
        jobs, sites = notice["j"], notice["s"]
        if notice["o"] == origin:
            return None
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(sites, list):
        sites = dict.fromkeys(sites)
    if not isinstance(jobs, list) or not isinstance(sites, dict):
        return None
    commands = [c for v in sites.values() if v is not None for c in (v if isinstance(v, list)
                                                                     else [None])]  # fmt: skip
    if not all(isinstance(v, str) for v in [*jobs, *sites, *commands]):
        return None
    return list(jobs), {site: None if v is None else set(v) for site, v in sites.items()}


class ChangeFeed:
    """The thread that LISTENs on ``CHANNEL`` for one store; reconnects until stopped."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        origin: str,
        listener: ChangeListener,
        resync: Callable[[], None] | None,
        shown: str,
    ) -> None:
        self._connect = connect
        self._origin = origin
        self._listener = listener
        self._resync = resync
        self._shown = shown
        self._stop = threading.Event()
        self.listening = threading.Event()  # set while LISTEN is in force (tests wait on it)
        self._thread = threading.Thread(target=self._run, name="broker-change-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.listening.is_set():
            self._wake()
        self._thread.join(timeout=STOP_CHECK_SECONDS * 3)

    def _wake(self) -> None:
        """A notice of our own origin ends the feed's wait now rather than at its next check
        (a store closing would otherwise wait up to ``STOP_CHECK_SECONDS``)."""
        try:
            with self._connect() as conn:
                payload = json.dumps({"o": self._origin, "j": [], "s": {}})
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        except psycopg.Error as exc:  # the feed still stops at its next check
            log.debug("change feed of %s: no wake-up notice (%s)", self._shown, exc)

    def _run(self) -> None:
        connected_before = False
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if connected_before and self._resync is not None:
                        log.info("change feed of %s: listening again; waking every long poll "
                                 "to look once more", self._shown)  # fmt: skip
                        self._resync()
                    connected_before = True
                    self._deliver(conn)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("change feed of %s: %s; reconnecting in %.0f s", self._shown,
                            str(exc).strip()[:300], RECONNECT_SECONDS)  # fmt: skip
                self._stop.wait(RECONNECT_SECONDS)
        self.listening.clear()

    def _deliver(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            for note in conn.notifies(timeout=STOP_CHECK_SECONDS):
                if self._stop.is_set():  # e.g. the wake-up notice of ``stop``
                    break
                change = parse(note.payload, self._origin)
                if change is not None:
                    job_ids, sites = change
                    self._listener(job_ids, sites)
