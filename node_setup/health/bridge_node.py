"""``mint-bridge health`` on the bridge node: the bridge config, then each chosen site.

SSH sites get the SSH checks (and the OpenSSH client's, with ``client = "openssh"``), broker
sites the broker checks with the bridge's client token, local sites a ``hello`` over pipes;
with ``--probe``, each site that passed them then gets the probe job (``job_probe``).
Sites are checked concurrently and the whole run ends within the timeout (``runner``).
"""

from __future__ import annotations

import os

from bridge.client.node_config import (
    BridgeConfig,
    BrokerSite,
    LocalSite,
    Site,
    SshSite,
    find_config,
)
from bridge.core.errors import BridgeError, ConfigError
from node_setup.health.broker import check_broker
from node_setup.health.broker_access import BrokerTarget
from node_setup.health.job_probe import with_probe
from node_setup.health.openssh import check_openssh_site
from node_setup.health.result import Check, Probe, Status
from node_setup.health.runner import Job, run_all
from node_setup.health.ssh import check_local_site, check_ssh_site

# Each site's own steps get a little less than the whole budget, so a slow step reports its
# own failure (with its own fix) before the runner has to cut it off.
_MARGIN = 0.9


def bridge_checks(
    config_path: str | None, site: str | None, timeout: float, *, probe_jobs: bool = False
) -> list[Check]:
    """The config check, then ``site`` (or every site of the config) within ``timeout``;
    ``probe_jobs``: then the end-to-end probe job of each site that passed (``job_probe``)."""
    probe = Probe("bridge")
    config = _config(config_path, probe)
    if config is None:
        return probe.snapshot()
    if site is not None and site not in config.sites:
        known = ", ".join(sorted(config.sites)) or "none"
        probe.fail(
            "bridge.site",
            site,
            "",
            f"no site {site!r} in {config.path}",
            f"use one of: {known}, or add it with `mint-bridge setup add-site`",
        )
        return probe.snapshot()
    chosen = [config.sites[site]] if site is not None else list(config.sites.values())
    if not chosen:
        probe.warn(
            "bridge.sites",
            0,
            "sites",
            f"{config.path} has no sites",
            "add one with `mint-bridge setup add-site`",
        )
        return probe.snapshot()
    budget = timeout * _MARGIN
    jobs = {
        s.name: with_probe(_job(s, budget), s, budget) if probe_jobs else _job(s, budget)
        for s in chosen
    }
    return probe.snapshot() + run_all(jobs, timeout)


def _config(config_path: str | None, probe: Probe) -> BridgeConfig | None:
    probe.start("bridge.config")
    try:
        config = find_config(config_path)
    except BridgeError as exc:
        probe.fail(
            "bridge.config",
            config_path,
            "",
            str(exc),
            f"{exc.fix if isinstance(exc, ConfigError) else 'fix it'}"
            " (reference: examples/bridge.toml)",
        )
        return None
    embedded = not os.path.exists(config.path)
    if embedded:
        probe.add(
            "bridge.config",
            Status.WARN,
            config.path,
            "",
            "no bridge config: using the embedded default (the local demo site)",
            "create one with `mint-bridge setup bridge-node`",
        )
    else:
        probe.ok("bridge.config", config.path, "", f"sites: {len(config.sites)}")
    return config


def _job(site: Site, budget: float) -> Job:
    if isinstance(site, SshSite) and site.client == "openssh":
        return lambda probe: check_openssh_site(site, probe, budget)
    if isinstance(site, SshSite):
        return lambda probe: check_ssh_site(site, probe, budget)
    if isinstance(site, LocalSite):
        return lambda probe: check_local_site(site, probe, budget)
    assert isinstance(site, BrokerSite)
    target = BrokerTarget(
        url=site.url,
        token_file=site.token_file,
        ca_bundle=site.ca_bundle,
        allow_http=site.allow_http,
        expected_scope="client",
        site=site.broker_site or site.name,
    )
    return lambda probe: check_broker(target, probe, budget)
