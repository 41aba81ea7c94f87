"""The ``[agent]`` table of a pull site's config: how its agent reaches the broker.

    [agent]
    url = "https://broker.example.org"   # or urls = ["https://a...", "https://b..."]
    token_file = "agent.token"   # relative to the config file
    max_jobs = 4
    metrics_listen = "127.0.0.1:9464"   # optional: Prometheus text at /metrics
    metrics_textfile = "/var/lib/node_exporter/textfile/mint-bridge-agent.prom"  # optional

Checked when the config is loaded (URL scheme, agent id, limits), so an agent never starts with
settings it cannot use. Never reads the token itself: that is the agent's, when it starts.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field

from bridge.core import defaults
from bridge.core.broker_endpoint import check_broker_urls, read_timeout_value
from bridge.core.tomlconf import Section
from bridge.core.units import parse_duration


@dataclass(frozen=True)
class AgentConfig:
    """The ``[agent]`` table: how this site's agent reaches the broker (the pull path)."""

    url: str  # the first instance: the broker a work dir's record names
    token_file: str
    ca_bundle: str | None = None
    allow_http: bool = False
    urls: tuple[str, ...] = ()  # every instance, ``url`` first; the agent fails over between
    agent_id: str = field(default_factory=socket.gethostname)
    max_jobs: int = defaults.AGENT_MAX_JOBS
    lease_renew: float = defaults.LEASE_WAIT  # seconds between lease renewals (long-poll wait)
    poll_wait: float = defaults.BROKER_POLL_WAIT  # long-poll wait of a claim
    read_timeout: float = defaults.HTTP_READ_TIMEOUT  # seconds of silence before a call is lost
    metrics_listen: tuple[str, int] | None = None  # (address, port) of /metrics
    metrics_textfile: str | None = None  # a node-exporter textfile-collector file
    where: str = "agent"  # "<config file>: agent", for error messages about its keys


_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")  # used with fullmatch


def load_agent(root: Section, config_dir: str) -> AgentConfig | None:
    if "agent" not in root.data:
        return None
    sec = root.section("agent")
    sec.check_keys(
        {
            "url", "urls", "token_file", "ca_bundle", "allow_http", "agent_id", "max_jobs",
            "lease_renew", "poll_wait", "read_timeout", "metrics_listen", "metrics_textfile",
        }
    )  # fmt: skip
    where = f"{sec.source}: {sec.path}"
    allow_http = sec.get("allow_http", bool, False)
    urls = check_broker_urls(sec.data.get("url"), sec.data.get("urls"), allow_http, where)
    agent_id = sec.get("agent_id", str, socket.gethostname())
    if not _AGENT_ID.fullmatch(agent_id):
        raise sec.error("use letters, digits, '_', '.', '@', '-' (at most 128)", "agent_id")
    max_jobs = sec.get("max_jobs", int, defaults.AGENT_MAX_JOBS)
    if max_jobs < 1:
        raise sec.error("must be at least 1", "max_jobs")
    lease_renew = sec.convert("lease_renew", parse_duration, defaults.LEASE_WAIT)
    if not 0 < lease_renew <= defaults.LEASE_WAIT:
        raise sec.error(f"must be between 0 and {defaults.LEASE_WAIT:g} seconds", "lease_renew")
    poll_wait = sec.convert("poll_wait", parse_duration, defaults.BROKER_POLL_WAIT)
    if not 0 < poll_wait <= defaults.BROKER_POLL_WAIT:
        raise sec.error(f"must be between 0 and {defaults.BROKER_POLL_WAIT:g} seconds", "poll_wait")
    read_timeout = read_timeout_value(sec)
    if not sec.data.get("token_file"):
        raise sec.error("is required: the file holding this site's broker token", "token_file")
    ca_bundle = sec.get("ca_bundle", str, "") or None
    return AgentConfig(
        url=urls[0],
        urls=urls,
        token_file=os.path.join(config_dir, sec.path_value("token_file", "")),
        ca_bundle=os.path.join(config_dir, os.path.expanduser(ca_bundle)) if ca_bundle else None,
        allow_http=allow_http,
        agent_id=agent_id,
        max_jobs=max_jobs,
        lease_renew=lease_renew,
        poll_wait=poll_wait,
        read_timeout=read_timeout,
        metrics_listen=_metrics_listen(sec),
        metrics_textfile=sec.prom_file_value(
            "metrics_textfile", "/var/lib/node_exporter/textfile/mint-bridge-agent.prom"
        ),
        where=where,
    )


def _metrics_listen(sec: Section) -> tuple[str, int] | None:
    """``"ADDRESS:PORT"``, ``"[IPv6]:PORT"`` or a bare port (then loopback, 127.0.0.1)."""
    value = sec.get("metrics_listen", str, "")
    if not value:
        return None
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    fix = "use ADDRESS:PORT with an IP address, e.g. \"127.0.0.1:9464\""
    try:
        ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        bad = f"{value!r:.80} is not an address and port; {fix}"
        raise sec.error(bad, "metrics_listen") from None
    if not 0 < port < 65536:
        raise sec.error(f"port {port} is not 1-65535; {fix}", "metrics_listen")
    return host, port


