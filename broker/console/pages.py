"""The console's overview, sites and agents pages: what the broker is doing now.

Figures come from ``broker.status`` (the same functions as ``mint-bridge broker sites`` and
``/metrics``), so each is computed one way. Read-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import render_template

from bridge import __version__
from broker.console.blueprint import bp
from broker.metrics import store_size
from broker.runtime import Broker, current
from broker.status import AgentStatus, SiteStatus, site_statuses

DAY = 86400.0


@dataclass(frozen=True)
class Totals:
    queued: int
    held: int
    running: int
    oldest_queued_at: float | None
    failures_24h: int


def _statuses(broker: Broker, now: float) -> list[SiteStatus]:
    return site_statuses(broker.store, now=now, absent_after=broker.config.agent_absent_after,
                         since=broker.started_at)  # fmt: skip


def _totals(statuses: list[SiteStatus], failures: dict[str, int]) -> Totals:
    oldest = [s.oldest_queued_at for s in statuses if s.oldest_queued_at is not None]
    return Totals(
        queued=sum(s.queued for s in statuses),
        held=sum(s.claimed + s.running for s in statuses),
        running=sum(s.running for s in statuses),
        oldest_queued_at=min(oldest, default=None),
        failures_24h=sum(failures.values()),
    )


@bp.get("/")
def overview() -> str:
    broker = current()
    now = broker.clock()
    statuses = _statuses(broker, now)
    failures = broker.store.failures_since(now - DAY)
    return render_template(
        "overview.html", page="overview", now=now, sites=statuses, failures=failures,
        totals=_totals(statuses, failures), version=__version__,
        uptime=now - broker.started_at, started_at=broker.started_at,
        store_kind=broker.config.store.kind, store_size=_store_size(broker),
    )  # fmt: skip


def _store_size(broker: Broker) -> int | None:
    """The SQLite file's size; None for a server database (its size is the server's)."""
    location = broker.config.store
    return store_size(location.path) if location.path else None


@bp.get("/sites")
def sites() -> str:
    broker = current()
    now = broker.clock()
    statuses = _statuses(broker, now)
    return render_template("sites.html", page="sites", now=now, sites=statuses,
                           failures=broker.store.failures_since(now - DAY))  # fmt: skip


@bp.get("/agents")
def agents() -> str:
    broker = current()
    now = broker.clock()
    found: list[AgentStatus] = [a for s in _statuses(broker, now) for a in s.agents]
    found.sort(key=lambda a: (a.site, a.agent_id))
    return render_template("agents.html", page="agents", now=now, agents=found,
                           absent_after=broker.config.agent_absent_after)  # fmt: skip
