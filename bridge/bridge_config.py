"""The bridge node's config: the sites a module may run on and how each is reached.

Found at ``--config``, else ``$MINT_BRIDGE_CONFIG``, else ``~/.config/mint-bridge/bridge.toml``;
when none exists, the embedded default has one site, ``local``, that runs the sample site
config in ``examples/kousoku`` on this machine (used by ``mint-bridge demo``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bridge import defaults
from bridge.errors import ConfigError
from bridge.tomlconf import Section, load_toml
from bridge.units import parse_duration

DEFAULT_PATH = "~/.config/mint-bridge/bridge.toml"
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


@dataclass(frozen=True)
class SshSite:
    name: str
    host: str  # an alias resolved through ~/.ssh/config, or a host name
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    ssh_config: str = "~/.ssh/config"
    connect_timeout: float = defaults.SSH_CONNECT_TIMEOUT
    keepalive: int = defaults.SSH_KEEPALIVE_SECONDS
    reconnect_attempts: int = defaults.RECONNECT_ATTEMPTS
    method: str = "ssh"


@dataclass(frozen=True)
class LocalSite:
    """A site that is this machine: the site entry runs as a child process over pipes."""

    name: str
    site_config: str
    method: str = "local"
    reconnect_attempts: int = defaults.RECONNECT_ATTEMPTS


Site = SshSite | LocalSite


@dataclass(frozen=True)
class BridgeConfig:
    path: str
    sites: dict[str, Site] = field(default_factory=dict)
    timeout: float | None = None  # overall limit for one `run`; None = no limit

    def site(self, name: str) -> Site:
        found = self.sites.get(name)
        if found is None:
            known = ", ".join(sorted(self.sites)) or "none"
            raise ConfigError(
                f"site {name!r} is not in {self.path}; known sites: {known}", field="site"
            )
        return found


def default_config() -> BridgeConfig:
    site_config = str(EXAMPLES_DIR / "kousoku" / "site.toml")
    return BridgeConfig("(embedded default)", {"local": LocalSite("local", site_config)})


def find_config(explicit: str | None) -> BridgeConfig:
    path = explicit or os.environ.get("MINT_BRIDGE_CONFIG")
    if path:
        return load_bridge_config(path)
    default_path = os.path.expanduser(DEFAULT_PATH)
    if os.path.exists(default_path):
        return load_bridge_config(default_path)
    return default_config()


def load_bridge_config(path: str) -> BridgeConfig:
    root = Section(path, "", load_toml(path))
    root.check_keys({"bridge", "sites"})
    bridge = root.section("bridge")
    bridge.check_keys({"timeout"})
    sites_sec = root.section("sites")
    sites: dict[str, Site] = {}
    for name in sorted(sites_sec.data):
        if not _SITE_NAME.match(name):
            raise sites_sec.error("site names use letters, digits, '_', '.', '-'", name)
        sites[name] = _load_site(sites_sec.section(name), name, path)
    return BridgeConfig(path, sites, _optional_duration(bridge, "timeout"))


def _load_site(sec: Section, name: str, config_path: str) -> Site:
    method = sec.get("method", str, "ssh")
    attempts = sec.get("reconnect_attempts", int, defaults.RECONNECT_ATTEMPTS)
    if method == "local":
        sec.check_keys({"method", "site_config", "reconnect_attempts"})
        site_config = sec.path_value("site_config", "") or _required(sec, "site_config")
        if not os.path.isabs(site_config):
            site_config = os.path.join(os.path.dirname(os.path.abspath(config_path)), site_config)
        return LocalSite(name, site_config, reconnect_attempts=attempts)
    if method != "ssh":
        raise sec.error(f"{method!r} is not a method; use 'ssh' or 'local'", "method")
    sec.check_keys(
        {
            "method", "host", "user", "port", "identity_file", "known_hosts", "ssh_config",
            "connect_timeout", "keepalive", "reconnect_attempts",
        }
    )  # fmt: skip
    port = sec.data.get("port")
    if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
        raise sec.error("must be a TCP port number (1-65535)", "port")
    identity = sec.data.get("identity_file")
    return SshSite(
        name=name,
        host=sec.require("host", str),
        user=sec.data.get("user") if isinstance(sec.data.get("user"), str) else None,
        port=port,
        identity_file=os.path.expanduser(identity) if isinstance(identity, str) else None,
        known_hosts=sec.path_value("known_hosts", "~/.ssh/known_hosts"),
        ssh_config=sec.path_value("ssh_config", "~/.ssh/config"),
        connect_timeout=sec.get("connect_timeout", float, defaults.SSH_CONNECT_TIMEOUT),
        keepalive=sec.get("keepalive", int, defaults.SSH_KEEPALIVE_SECONDS),
        reconnect_attempts=attempts,
    )


def _required(sec: Section, key: str) -> str:
    raise sec.error("is required", key)


def _optional_duration(sec: Section, key: str) -> float | None:
    return sec.convert(key, parse_duration, None) if key in sec.data else None
