"""``broker import-ini``: the original broker's ini file as a broker.toml.

The original (``mi_distributed_computing_assist.ini``)::

    [Server]
    ipaddress = 192.168.10.242
    portnumber = 8082

    [RemoteSites]
    remote_site_ids = nims-dev
                      rme-u-tokyo

    [nims-dev]
    commands = /opt/Abaqus/Commands/abaqus
            /opt/fem-ccv/femccv

becomes ``[server] host/port`` and ``[legacy] enabled = true`` with ``[legacy.sites]``: the
same sites and the same commands, matched exactly as before. Values are split on white space
as the original did; ``%`` is taken literally.

This module only reads the ini and writes text; it never starts anything and never writes a
token.
"""

from __future__ import annotations

import configparser
import json
from dataclasses import dataclass, field

from bridge.core.errors import ConfigError
from broker import defaults
from broker.legacy.config import SITE_ID, command_problem


@dataclass(frozen=True)
class ImportedIni:
    host: str | None
    port: int | None
    sites: dict[str, list[str]]
    warnings: list[str] = field(default_factory=list)


def read_ini(path: str) -> ImportedIni:
    # No interpolation: the original read values with ConfigParser's default, where a '%'
    # would have failed; taken literally here, a command is never rewritten.
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except configparser.Error as exc:
        raise ConfigError(f"{path} is not a valid ini file: {exc}") from exc
    return parse_ini(parser, path)


def parse_ini(parser: configparser.ConfigParser, path: str) -> ImportedIni:
    warnings: list[str] = []
    host = parser.get("Server", "ipaddress", fallback=None)
    port_text = parser.get("Server", "portnumber", fallback=None)
    port: int | None = None
    if port_text is not None:
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"{path}: [Server] portnumber {port_text!r} is not a number"
                              ) from None  # fmt: skip
        if not 1 <= port <= 65535:
            raise ConfigError(f"{path}: [Server] portnumber {port} is not a TCP port")
    if port is not None and port != defaults.PORT:
        warnings.append(
            f"the original clients append :{defaults.PORT} to the URL they are given; port "
            f"{port} is kept from [Server] portnumber (the original listened behind a gateway "
            f"on {defaults.PORT}): set [server] port = {defaults.PORT} unless a proxy forwards "
            f"{defaults.PORT} to {port}"
        )
    site_ids = parser.get("RemoteSites", "remote_site_ids", fallback="").split()
    if not site_ids:
        warnings.append(f"{path}: [RemoteSites] remote_site_ids lists no site")
    sites: dict[str, list[str]] = {}
    for site in site_ids:
        if not SITE_ID.fullmatch(site):
            raise ConfigError(
                f"{path}: site id {site!r:.80} cannot be a site token's name here (1-64 "
                "letters, digits, '.', '_' or '-'); rename it at the site and in the ini"
            )
        commands = parser.get(site, "commands", fallback="").split() if parser.has_section(
            site) else []  # fmt: skip
        if not parser.has_section(site):
            warnings.append(f"site {site} has no [{site}] section: it may run no command")
        for command in commands:
            problem = command_problem(command)
            if problem:
                raise ConfigError(f"{path}: [{site}] commands: {command!r:.80}: {problem}")
        sites[site] = list(dict.fromkeys(commands))  # the same command twice is one command
    for section in parser.sections():
        if section not in ("Server", "RemoteSites") and section not in sites:
            warnings.append(f"section [{section}] is not in remote_site_ids; ignored, as before")
    return ImportedIni(host, port, sites, warnings)


def _string(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes), keys included.
    return json.dumps(value, ensure_ascii=False)


def render_toml(
    imported: ImportedIni, *, data_dir: str, cert: str, key: str, source: str
) -> str:
    """A complete broker.toml; TLS stays on (the original sat behind a TLS gateway)."""
    host = imported.host or "0.0.0.0"  # noqa: S104 - the broker serves sites on other machines
    port = imported.port or defaults.PORT
    lines = [
        f"# Made by `mint-bridge broker import-ini` from {source}.",
        "# The original clients append :50443 to the URL they are given.",
        "",
        "[server]",
        f"host = {_string(host)}",
        f"port = {port}",
        f"cert = {_string(cert)}",
        f"key = {_string(key)}",
        "",
        "[storage]",
        f"data_dir = {_string(data_dir)}",
        "",
        "[legacy]",
        "enabled = true",
        '# Files travel as base64 in one JSON body; larger jobs need the new API.',
        'max_body = "64MiB"',
        "",
        "[legacy.sites]",
        "# Exact command strings per site: the original poller runs them with a shell.",
    ]
    for site, commands in imported.sites.items():
        listed = ", ".join(_string(c) for c in commands)
        lines.append(f"{_string(site)} = [{listed}]")
    return "\n".join(lines) + "\n"
