"""Which sites this broker serves, and whether any agent of a site is online.

A site exists at a broker through its site tokens (``mint-bridge broker token create --site
NAME``): its agents, and the original API's pollers, act with them. A job for a site without
an active token could never be claimed, so the client API refuses it when it is created
(``check_registered``), with the command that registers the site.

An agent is online when it claimed, renewed a lease or took a legacy step within
``[jobs] agent_absent_after`` (``Store.agents_seen``), counted from this broker's start at the
earliest, since no agent can poll a broker that is down. A queued job of a site with no agent
online carries a ``notice`` in its client document (``Presence.notice``), so the client can
say so while it waits and name the true reason when the job ends unclaimed.

This module never writes to the store and never decides who may see a job.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.errors import UnknownSite
from broker.runtime import Broker
from broker.store import JobRecord, Scope, State
from broker.store.rules import human_duration

# The notice's stable code: clients test it, never the message.
NO_AGENT_ONLINE = "no_agent_online"


def check_registered(broker: Broker, site: str) -> None:
    """UnknownSite unless ``site`` has an active site token at this broker."""
    tokens = [t for t in broker.store.list_tokens() if t.scope is Scope.SITE and t.subject == site]
    if any(not t.revoked for t in tokens):
        return
    config = shlex.quote(broker.config.source or "broker.toml")
    command = f"mint-bridge broker token create --site {site} --config {config}"
    if tokens:
        said = f"site {site!r} has no active token at this broker (its tokens were revoked)"
    else:
        said = f"no site {site!r} is registered at this broker"
    raise UnknownSite(
        f"{said}: on the broker host, create its token with `{command}` and give it to the "
        "site's agent; or correct the site name",
        field="site",
    )


@dataclass(frozen=True)
class Presence:
    """When each site's agents were last seen, as of ``now``: one look at the store."""

    last_seen: Mapping[str, float]
    now: float
    since: float  # the broker's start: agents are not missed for the time it was down
    absent_after: float
    queue_ttl: float

    @classmethod
    def of(cls, broker: Broker) -> Presence:
        latest: dict[str, float] = {}
        for seen in broker.store.agents_seen():
            latest[seen.site] = max(seen.last_seen, latest.get(seen.site, seen.last_seen))
        config = broker.config
        return cls(latest, broker.clock(), broker.started_at, config.agent_absent_after,
                   config.queue_ttl)  # fmt: skip

    def online(self, site: str) -> bool:
        return self.absent_in(site) > 0

    def absent_in(self, site: str) -> float:
        """Seconds until ``site`` counts as having no agent online unless one is seen (0: it
        has none now). A long poll of a queued job ends then, so the notice arrives on time."""
        last = self.last_seen.get(site)
        reference = self.since if last is None else max(last, self.since)
        return max(0.0, reference + self.absent_after - self.now)

    def notice(self, job: JobRecord) -> dict[str, Any] | None:
        """What a job waiting for a claim says when no agent of its site is online."""
        site = job.spec.site
        if job.state is not State.QUEUED or self.online(site):
            return None
        last = self.last_seen.get(site)
        if last is None:
            said = f"no agent of site {site} has ever polled this broker"
        else:
            said = f"no agent of site {site} has polled the broker for {elapsed(self.now - last)}"
        return {
            "code": NO_AGENT_ONLINE,
            "message": f"{said}; the job stays queued until one does (at most "
            f"{human_duration(self.queue_ttl)}, the broker's queue limit)",
            "agent_last_seen": last,
        }


def client_document(job: JobRecord, presence: Presence) -> dict[str, Any]:
    """The job document as clients get it: with the notice of its site's agents."""
    doc = job.document()
    doc["notice"] = presence.notice(job)
    return doc


def elapsed(seconds: float) -> str:
    """``45 -> '45 s'``, ``300 -> '5 min'``, ``7200 -> '2 h'``: a time a person reads."""
    seconds = max(0.0, seconds)
    for unit, size, above in (("d", 86400, 2 * 86400), ("h", 3600, 2 * 3600), ("min", 60, 120)):
        if seconds >= above:
            return f"{round(seconds / size)} {unit}"
    return f"{int(seconds)} s"
