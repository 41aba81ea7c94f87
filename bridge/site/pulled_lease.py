"""A pulled job's lease at the broker: keeping it renewed, and what the renewals say.

While the agent acts on a job it renews the job's lease (a long poll that returns early when
the bridge asks for a cancel). The answers end up in events the job's thread checks between
steps: a cancel was requested, a newer lease holds the job (``lost``), or the broker ended or
deleted it without us (``gone``). ``checkpoint`` turns the last two, and the agent stopping,
into ``HandBack`` or ``Dropped``, so the thread stops acting on the job at once.

Never: renew a lease after the job's thread finished, or take a refused renewal during the
job's completion for a lost lease (the broker ends the lease when it accepts ``complete``).
"""

from __future__ import annotations

import logging
import threading

from bridge.core.errors import BridgeError, Conflict, JobUnknown, LeaseLost
from bridge.site.agent_api import AgentApi, Lease
from bridge.site.config import AgentConfig

log = logging.getLogger(__name__)


class HandBack(Exception):
    """Stop acting on the job without completing it (the agent stops, or the lease is gone).

    The job runs on in its scheduler; its lease lapses and the broker gives it back to this
    agent id (``reattach``), which then follows it from where the broker's logs stand.
    """


class Dropped(HandBack):
    """The broker ended the job without us (cancelled while this agent was away, or deleted):
    nobody will collect it, so it is stopped here too."""


class LeaseKeeper:
    """Renews one job's lease in a thread of its own until the job's thread has finished."""

    def __init__(self, agent: AgentConfig, lease: Lease, stopping: threading.Event) -> None:
        self.agent = agent
        self.lease = lease
        self.job_id = lease.job_id
        self.stopping = stopping  # the agent is stopping
        self.cancel = threading.Event()  # the bridge asked for a cancel
        self.lost = threading.Event()  # a newer lease holds the job
        self.gone = threading.Event()  # the broker ended or deleted the job without us
        self.finished = threading.Event()  # the job's thread is done: stop renewing
        self.completing = False  # set before ``complete``: a refused renewal is then expected

    def start(self) -> None:
        keeper = threading.Thread(target=self.run, name=f"lease-{self.job_id[:8]}")
        keeper.daemon = True
        keeper.start()

    def checkpoint(self) -> None:
        """Raise ``Dropped`` or ``HandBack`` when the job must no longer be acted on."""
        if self.gone.is_set():
            raise Dropped("the broker ended or removed the job while this agent was away")
        if self.lost.is_set():
            raise HandBack("a newer lease holds the job")
        if self.stopping.is_set():
            raise HandBack("the agent is stopping")

    def run(self) -> None:
        """Renew the lease until the job is done; a long poll that returns early on cancel."""
        try:
            api = AgentApi(self.agent)
        except BridgeError as exc:
            log.error("%s: cannot renew the lease: %s", self.job_id, exc)
            return
        try:
            while not self.finished.is_set() and self._renew_once(api):
                pass
        finally:
            api.close()

    def _renew_once(self, api: AgentApi) -> bool:
        """One renewal; False once there is no lease left to renew."""
        wait = 0.0 if self.cancel.is_set() else self.agent.lease_renew
        try:
            state = api.renew(self.lease, wait=wait)
        except (LeaseLost, Conflict, JobUnknown) as exc:
            if not (self.completing or self.finished.is_set()):
                log.warning("%s: lease not renewed: %s", self.job_id, exc)
                gone = isinstance(exc, JobUnknown) or (
                    isinstance(exc, Conflict) and exc.code == "invalid_state"
                )
                (self.gone if gone else self.lost).set()
            return False
        except BridgeError as exc:
            log.warning("%s: lease renewal failed: %s; trying again", self.job_id, exc)
            self.finished.wait(min(5.0, self.agent.lease_renew))
            return True
        if state.cancel_requested and not self.cancel.is_set():
            self.cancel.set()
        if self.cancel.is_set():  # the long poll now returns at once: renew at a calm pace
            self.finished.wait(max(1.0, min(self.agent.lease_renew, state.ttl / 3)))
        return True
