"""Checks of the HTTPS broker, from the bridge node (client token) or a site (site token).

    broker.reachable     the broker answers HTTP; value: time to the answer, in ms
    broker.tls           the certificate chain verifies (system CAs or the CA bundle) and
                         names the host
    broker.cert_expiry   days until the certificate expires: warn < 30, fail < 7
    broker.token         the token is accepted and has the expected scope
    broker.clock_skew    the broker's clock (its Date header) against ours, in seconds
    broker.queue.<site>  jobs waiting for a site and how long the oldest has waited
    broker.agent.<site>  when the site's agent was last seen (admin token only)

The token is read from its 0600 file and sent only in the ``Authorization`` header, and only
over a connection whose certificate verified (or plain http to this machine, when the config
allows it): a broker that fails the TLS check never sees the token.
"""

from __future__ import annotations

import email.utils
import http.client
import ssl
from collections import defaultdict
from typing import Any

from bridge.core.broker_endpoint import check_broker_url, read_token
from bridge.core.errors import BridgeError
from node_setup.health.broker_access import Answer, BrokerTarget, HealthClient
from node_setup.health.broker_tls import check_tls
from node_setup.health.result import Probe
from node_setup.health.runner import Deadline

SKEW_WARN_S = 5.0  # job times and lease expiry read oddly beyond this
SKEW_FAIL_S = 30.0  # half a lease (60 s): leases may expire early or late
QUEUE_WARN_S = 5 * 60.0  # an agent long-polls every <= 50 s: a job this old is not claimed
QUEUE_FAIL_S = 30 * 60.0
AGENT_WARN_S = 3 * 60.0  # an idle agent polls at least every ~50 s
AGENT_FAIL_S = 15 * 60.0
_NO_JOB = "00000000-0000-4000-8000-000000000000"  # a valid UUID4 no broker will hold


def check_broker(target: BrokerTarget, probe: Probe, timeout: float) -> None:
    deadline = Deadline(timeout)
    probe.start("broker.config")
    try:
        url = check_broker_url(target.url, target.allow_http, "broker")
    except BridgeError as exc:
        probe.fail("broker.config", target.url, "", str(exc), "fix the broker URL")
        return
    client = HealthClient(url, target.ca_bundle, deadline)
    if client.https and not check_tls(client, probe):
        _skip(probe, "the broker's certificate does not verify; the token was not sent")
        return
    answer = _reachable(client, probe)
    if answer is None:
        _skip(probe, "the broker does not answer")
        return
    _clock(answer, probe)
    token = _token(target, probe)
    if token is None:
        return
    scope = _scope(client, token, target, probe)
    if scope is not None:
        _queues_and_agents(client, token, scope, target, probe)


def _skip(probe: Probe, why: str) -> None:
    probe.unknown("broker.token", f"not checked: {why}")


# --- HTTP, clock ----------------------------------------------------------------------------


def _reachable(client: HealthClient, probe: Probe) -> Answer | None:
    probe.start("broker.reachable", "the broker accepts connections but does not answer")
    try:
        answer = client.get("/api/v1/health")
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        refused = isinstance(exc, ConnectionRefusedError)
        probe.fail(
            "broker.reachable",
            f"{client.host}:{client.port}",
            "",
            f"no answer: {exc}",
            "start the broker (nothing listens there)"
            if refused
            else "check the network and firewalls to the broker",
        )
        return None
    ms = round(answer.seconds * 1000, 1)
    if answer.status >= 500:
        probe.fail(
            "broker.reachable",
            answer.status,
            "HTTP status",
            "the broker answers with errors",
            "read the broker's log",
        )
        return None
    probe.ok("broker.reachable", ms, "ms", f"HTTP {answer.status}")
    return answer


def _clock(answer: Answer, probe: Probe) -> None:
    probe.start("broker.clock_skew")
    date = answer.headers.get("date")
    if not date:
        probe.unknown("broker.clock_skew", "the broker sent no Date header")
        return
    broker_time = email.utils.parsedate_to_datetime(date).timestamp()
    # Date has whole seconds: up to 1 s of "skew" is rounding, not a wrong clock.
    skew = broker_time - answer.sent_at
    skew = 0.0 if abs(skew) < 1.0 else round(skew, 1)
    fix = "run NTP (chrony, systemd-timesyncd) on both machines"
    if abs(skew) >= SKEW_FAIL_S:
        probe.fail("broker.clock_skew", skew, "s", f"the clocks differ by {skew:+.0f} s", fix)
    elif abs(skew) >= SKEW_WARN_S:
        probe.warn("broker.clock_skew", skew, "s", f"the clocks differ by {skew:+.0f} s", fix)
    else:
        probe.ok("broker.clock_skew", skew, "s", "clocks agree")


# --- the token and its scope ------------------------------------------------------------------


def _token(target: BrokerTarget, probe: Probe) -> str | None:
    probe.start("broker.token")
    if not target.token_file:
        probe.unknown("broker.token", "no token file given", "pass --token-file")
        return None
    try:
        return read_token(target.token_file, "broker")
    except BridgeError as exc:
        probe.fail("broker.token", target.token_file, "", str(exc), "fix the token file")
        return None


def _scope(client: HealthClient, token: str, target: BrokerTarget, probe: Probe) -> str | None:
    """Which scope the token has, found by which API areas admit it (nothing is changed)."""
    try:
        admin = client.get("/api/v1/admin/queues", token)
        if admin.status == 401:
            probe.fail(
                "broker.token",
                target.token_file,
                "",
                _said(admin, "the broker rejects it"),
                "ask the broker admin for a new token (it is unknown or revoked)",
            )
            return None
        scope = "admin" if admin.status == 200 else None
        if scope is None and client.get("/api/v1/jobs?state=queued", token).status == 200:
            scope = "client"
        if scope is None:
            agent = client.get(f"/api/v1/agent/jobs/{_NO_JOB}/inputs/probe", token)
            scope = "site" if agent.status == 404 else None
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        probe.fail(
            "broker.token", None, "", f"the broker stopped answering: {exc}", "check the broker"
        )
        return None
    expected = target.expected_scope
    if scope is None or (expected and scope != expected and scope != "admin"):
        probe.fail(
            "broker.token",
            scope or "none",
            "scope",
            f"the token has scope {scope or 'none'}, this check needs {expected or 'a scope'}",
            f"use a {expected or 'valid'} token (bridge node: client; site agent: site)",
        )
        return None
    probe.ok("broker.token", scope, "scope", "accepted")
    return scope


def _said(answer: Answer, default: str) -> str:
    error = answer.json().get("error")
    return str(error.get("message", default)) if isinstance(error, dict) else default


# --- queues and agents ------------------------------------------------------------------------


def _queues_and_agents(
    client: HealthClient, token: str, scope: str, target: BrokerTarget, probe: Probe
) -> None:
    probe.start("broker.queue")
    if scope == "admin":
        queues = _admin_queues(client, token)
        seen = client.get("/api/v1/admin/agents", token).json().get("agents", [])
        agents = [a for a in seen if isinstance(a, dict)]
    elif scope == "client":
        queues, agents = _own_queues(client, token), []
    else:
        return  # a site token sees no queue; the agent's own log tells about its work
    if target.site is not None:
        queues = {target.site: queues.get(target.site, (0, None))}
    for site, (depth, oldest) in sorted(queues.items()):
        _queue(site, depth, oldest, probe)
    for site, ago in sorted(_latest_seen(agents).items()):
        if target.site is None or site == target.site:
            _agent(site, ago, probe)


def _admin_queues(client: HealthClient, token: str) -> dict[str, tuple[int, float | None]]:
    sites = client.get("/api/v1/admin/queues", token).json().get("sites", [])
    return {
        str(s.get("site")): (int(s.get("queued", 0)), s.get("oldest_wait"))
        for s in sites
        if isinstance(s, dict)
    }


def _own_queues(client: HealthClient, token: str) -> dict[str, tuple[int, float | None]]:
    """A client sees only its own jobs: their queue, by site, from the job documents."""
    answer = client.get("/api/v1/jobs?state=queued", token)
    jobs = [j for j in answer.json().get("jobs", []) if isinstance(j, dict)]
    depth: dict[str, int] = defaultdict(int)
    since: dict[str, float] = {}
    for job in jobs:
        site = str(job.get("site"))
        depth[site] += 1
        queued_at = float(job.get("updated_at") or job.get("created_at") or answer.sent_at)
        since[site] = min(since.get(site, queued_at), queued_at)
    return {site: (count, max(0.0, answer.sent_at - since[site])) for site, count in depth.items()}


def _queue(site: str, depth: int, oldest: float | None, probe: Probe) -> None:
    name = f"broker.queue.{site}"
    wait = round(float(oldest), 1) if oldest is not None and depth else 0.0
    seen = f"{depth} queued, the oldest waiting {wait:.0f} s"
    fix = f"start the agent of {site} (at the site: mint-bridge health --site-side)"
    if wait >= QUEUE_FAIL_S:
        probe.fail(name, wait, "s", seen, fix)
    elif wait >= QUEUE_WARN_S:
        probe.warn(name, wait, "s", seen, fix)
    else:
        probe.ok(name, wait, "s", seen)


def _latest_seen(agents: list[dict[str, Any]]) -> dict[str, float]:
    latest: dict[str, float] = {}
    for agent in agents:
        site, ago = str(agent.get("site")), float(agent.get("seconds_ago", 0.0))
        latest[site] = min(latest.get(site, ago), ago)
    return latest


def _agent(site: str, ago: float, probe: Probe) -> None:
    name = f"broker.agent.{site}"
    ago = round(ago, 1)
    seen = f"an agent of {site} was last seen {ago:.0f} s ago"
    fix = f"check the agent at {site}: systemctl status mint-bridge-agent.service"
    if ago >= AGENT_FAIL_S:
        probe.fail(name, ago, "s", seen, fix)
    elif ago >= AGENT_WARN_S:
        probe.warn(name, ago, "s", seen, fix)
    else:
        probe.ok(name, ago, "s", seen)
