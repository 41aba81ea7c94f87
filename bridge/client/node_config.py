"""The bridge node's config: the sites a module may run on and how each is reached.

Found at ``--config``, else ``$MINT_BRIDGE_CONFIG``, else ``~/.config/mint-bridge/bridge.toml``;
when none exists, the embedded default has one site, ``local``, that runs the sample site
config in ``examples/kousoku`` on this machine (used by ``mint-bridge demo``).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any

from bridge.client.examples import examples_dir
from bridge.core import defaults
from bridge.core.broker_endpoint import check_broker_urls, read_timeout_value
from bridge.core.errors import ConfigError
from bridge.core.tomlconf import Section, load_toml
from bridge.core.units import parse_duration

DEFAULT_PATH = "~/.config/mint-bridge/bridge.toml"
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used with fullmatch
# A host name, an address or an ~/.ssh/config alias: never an option (leading '-'), never a
# second word or a user@ prefix (``user`` says that), nothing a shell or ssh could re-read.
_SSH_HOST = re.compile(r"[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]{0,252}")
_SSH_CLIENTS = ("paramiko", "openssh")
_OPENSSH_ONLY = ("share_connection", "connection_persist", "control_dir")
# Unix socket paths hold at most 107 bytes on Linux. A control socket is this dir, "/", a
# 24-character name and, while OpenSSH binds it, a 17-character temporary suffix.
_MAX_CONTROL_DIR = 64
EXAMPLES_DIR = examples_dir()  # a wheel's package data, else the checkout's examples/


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
    # Which SSH client carries the protocol: "paramiko" (in-process) or "openssh" (the system's
    # ``ssh``: C-speed transfers, and jobs share one connection through a control socket).
    client: str = "paramiko"
    share_connection: bool = True  # openssh only: ControlMaster=auto
    connection_persist: float = defaults.SSH_CONNECTION_PERSIST  # openssh only: ControlPersist
    control_dir: str = defaults.SSH_CONTROL_DIR  # openssh only: where control sockets live
    # The bridge config the site came from, for messages that name a key to fix.
    config_path: str = field(default="", compare=False)

    def setting(self, key: str) -> str:
        """Where the site's ``key`` is set, for a message that tells what to fix."""
        return f"{key} of [sites.{self.name}] in {self.config_path or 'the bridge config'}"


@dataclass(frozen=True)
class LocalSite:
    """A site that is this machine: the site entry runs as a child process over pipes."""

    name: str
    site_config: str
    method: str = "local"
    reconnect_attempts: int = defaults.RECONNECT_ATTEMPTS


@dataclass(frozen=True)
class BrokerSite:
    """A pull site: jobs go through the broker at ``url``; the site's agent fetches them."""

    name: str
    url: str  # the first instance
    token_file: str
    ca_bundle: str | None = None
    allow_http: bool = False
    urls: tuple[str, ...] = ()  # every instance, ``url`` first; calls fail over between them
    poll_wait: float = defaults.BROKER_POLL_WAIT
    read_timeout: float = defaults.HTTP_READ_TIMEOUT  # seconds of silence before a call is lost
    broker_site: str = ""  # the site's name at the broker; empty: the same as ``name``
    reconnect_attempts: int = defaults.HTTP_ATTEMPTS
    method: str = "broker"
    where: str = ""  # "<config file>: sites.<name>", for error messages about its keys


Site = SshSite | LocalSite | BrokerSite


@dataclass(frozen=True)
class BridgeConfig:
    path: str
    sites: dict[str, Site] = field(default_factory=dict)
    timeout: float | None = None  # overall limit for one `run`; None = no limit
    metrics_textfile: str | None = None  # node-exporter textfile each run adds its job to

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
    bridge.check_keys({"timeout", "metrics_textfile"})
    sites_sec = root.section("sites")
    sites: dict[str, Site] = {}
    for name in sorted(sites_sec.data):
        if not _SITE_NAME.fullmatch(name):
            raise sites_sec.error("site names use letters, digits, '_', '.', '-'", name)
        sites[name] = _load_site(sites_sec.section(name), name, path)
    return BridgeConfig(
        path, sites, _optional_duration(bridge, "timeout"), bridge.prom_file_value(
            "metrics_textfile", "/var/lib/node_exporter/textfile/mint-bridge.prom"
        )
    )


def _load_site(sec: Section, name: str, config_path: str) -> Site:
    method = sec.get("method", str, "ssh")
    attempts = sec.get("reconnect_attempts", int, defaults.RECONNECT_ATTEMPTS)
    if attempts < 0:
        raise sec.error("must not be negative", "reconnect_attempts")
    if method == "local":
        sec.check_keys({"method", "site_config", "reconnect_attempts"})
        site_config = sec.path_value("site_config", "") or _required(sec, "site_config")
        if not os.path.isabs(site_config):
            site_config = os.path.join(os.path.dirname(os.path.abspath(config_path)), site_config)
        return LocalSite(name, site_config, reconnect_attempts=attempts)
    if method == "broker":
        return _load_broker_site(sec, name, attempts)
    if method != "ssh":
        raise sec.error(f"{method!r} is not a method; use 'ssh', 'local' or 'broker'", "method")
    sec.check_keys(
        {
            "method", "host", "user", "port", "identity_file", "known_hosts", "ssh_config",
            "connect_timeout", "keepalive", "reconnect_attempts", "client", *_OPENSSH_ONLY,
        }
    )  # fmt: skip
    port = sec.data.get("port")
    if port is not None and (
        not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
    ):
        raise sec.error("must be a TCP port number (1-65535)", "port")
    connect_timeout = sec.get("connect_timeout", float, defaults.SSH_CONNECT_TIMEOUT)
    if not 0 < connect_timeout < float("inf"):
        raise sec.error("must be a positive number of seconds", "connect_timeout")
    keepalive = sec.get("keepalive", int, defaults.SSH_KEEPALIVE_SECONDS)
    if keepalive < 0:
        raise sec.error("must not be negative (0 turns keepalives off)", "keepalive")
    user = _optional_str(sec, "user")
    if user is not None and not _SSH_HOST.fullmatch(user):
        raise sec.error("must be a plain user name (letters, digits, '_', '.', '-')", "user")
    identity = _optional_str(sec, "identity_file")
    host = sec.require("host", str)
    if not _SSH_HOST.fullmatch(host):
        raise sec.error(
            f"{host!r:.80} is not a host name, address or ~/.ssh/config alias; put the user "
            "in 'user' and the port in 'port'",
            "host",
        )
    return SshSite(
        name=name,
        host=host,
        user=user,
        port=port,
        identity_file=os.path.expanduser(identity) if identity is not None else None,
        known_hosts=sec.path_value("known_hosts", "~/.ssh/known_hosts"),
        ssh_config=sec.path_value("ssh_config", "~/.ssh/config"),
        connect_timeout=connect_timeout,
        keepalive=keepalive,
        reconnect_attempts=attempts,
        config_path=config_path,
        **_ssh_client_options(sec),
    )


def default_ssh_client() -> str:
    """``openssh`` where an ``ssh`` binary is on PATH (every Debian bridge node), else paramiko.

    OpenSSH moves bytes at C speed with half paramiko's memory and shares one connection between
    jobs; paramiko stays for platforms without it, or where a site's config asks for it."""
    return "openssh" if shutil.which("ssh") else "paramiko"


def _ssh_client_options(sec: Section) -> dict[str, Any]:
    client = sec.get("client", str, "") or default_ssh_client()
    if client not in _SSH_CLIENTS:
        raise sec.error(f"{client!r} is not an SSH client; use 'paramiko' or 'openssh'", "client")
    if client != "openssh":
        for key in _OPENSSH_ONLY:
            if key in sec.data:
                raise sec.error("applies only with client = 'openssh'", key)
        return {"client": client}
    persist = sec.convert("connection_persist", parse_duration, defaults.SSH_CONNECTION_PERSIST)
    if persist < 0:
        raise sec.error("must not be negative (0 closes the connection with the last job)",
                        "connection_persist")
    control_dir = sec.path_value("control_dir", "") or default_control_dir()
    if not os.path.isabs(control_dir) or len(control_dir.encode()) > _MAX_CONTROL_DIR:
        raise sec.error(
            f"must be an absolute path of at most {_MAX_CONTROL_DIR} bytes (unix socket paths "
            f"are short); {control_dir!r:.100} is not",
            "control_dir",
        )
    return {
        "client": client,
        "share_connection": sec.get("share_connection", bool, True),
        "connection_persist": persist,
        "control_dir": control_dir,
    }


def default_control_dir() -> str:
    """``~/.local/state/mint-bridge/ssh``, unless the home dir is too deep for a socket path:
    then the user's runtime dir, else a per-user dir in /tmp (which the client refuses to use
    if another user made it first, or made it a symlink)."""
    candidates = [os.path.expanduser(defaults.SSH_CONTROL_DIR)]
    if os.environ.get("XDG_RUNTIME_DIR", "").startswith("/"):
        candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "mint-bridge-ssh"))
    for path in candidates:
        if len(path.encode()) <= _MAX_CONTROL_DIR:
            return path
    return f"/tmp/mint-bridge-ssh-{os.getuid()}"  # the client checks: ours, 0700, no link


def _load_broker_site(sec: Section, name: str, attempts: int) -> BrokerSite:
    sec.check_keys(
        {
            "method", "url", "urls", "token_file", "ca_bundle", "allow_http", "poll_wait",
            "broker_site", "reconnect_attempts", "read_timeout",
        }
    )  # fmt: skip
    where = f"{sec.source}: {sec.path}"
    allow_http = sec.get("allow_http", bool, False)
    urls = check_broker_urls(sec.data.get("url"), sec.data.get("urls"), allow_http, where)
    poll_wait = sec.get("poll_wait", float, defaults.BROKER_POLL_WAIT)
    if not 0 < poll_wait <= defaults.BROKER_POLL_WAIT:
        raise sec.error(f"must be between 0 and {defaults.BROKER_POLL_WAIT:g} seconds", "poll_wait")
    ca_bundle = _optional_str(sec, "ca_bundle")
    if not sec.data.get("token_file"):
        raise sec.error("is required: the file holding this bridge's broker token", "token_file")
    return BrokerSite(
        name=name,
        url=urls[0],
        urls=urls,
        token_file=sec.file_value("token_file", ""),
        ca_bundle=sec.file_value("ca_bundle", "") if ca_bundle is not None else None,
        allow_http=allow_http,
        poll_wait=poll_wait,
        read_timeout=read_timeout_value(sec),
        broker_site=_optional_str(sec, "broker_site") or name,
        reconnect_attempts=attempts,
        where=where,
    )


def _optional_str(sec: Section, key: str) -> str | None:
    """A string that may be left out; any other type is an error, never silently ignored."""
    if key not in sec.data:
        return None
    return sec.get(key, str, "") or None


def _required(sec: Section, key: str) -> str:
    raise sec.error("is required", key)


def _optional_duration(sec: Section, key: str) -> float | None:
    return sec.convert(key, parse_duration, None) if key in sec.data else None
