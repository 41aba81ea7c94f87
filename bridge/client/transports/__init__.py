"""How the bridge node reaches a site: paramiko or OpenSSH over SSH, or a local child process.

``connector_for`` is the one factory: ``mint-bridge run`` and the health checks both reach a
site through it, so a site's ``client = "openssh"`` means the same to both. A broker site has
no connection of its own (its jobs go through ``bridge.client.broker_job``).
"""

from __future__ import annotations

from dataclasses import replace

from bridge.client.node_config import BrokerSite, LocalSite, Site
from bridge.client.transports.base import Connector, LocalConnector
from bridge.core.errors import ConfigError


def connector_for(site: Site, connect_timeout: float | None = None) -> Connector:
    """The connector for ``site``; ``connect_timeout`` caps the site's own connect timeout."""
    if isinstance(site, LocalSite):
        return LocalConnector(site)
    if isinstance(site, BrokerSite):
        raise ConfigError(f"site {site.name} is reached through its broker, not a connection")
    if connect_timeout is not None:
        site = replace(site, connect_timeout=min(site.connect_timeout, connect_timeout))
    if site.client == "openssh":  # paramiko is then never imported
        from bridge.client.transports.openssh import OpenSshConnector

        return OpenSshConnector(site)
    from bridge.client.transports.paramiko_ssh import SshConnector

    return SshConnector(site)
