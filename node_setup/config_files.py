"""The bridge node's config files as setup edits them: bridge.toml and mint-bridge's SSH config.

Edits are textual, so the admin's comments and layout stay: a site's ``[sites.NAME]`` table is
appended, or replaced in place of the old one; a ``Host`` block is replaced or appended. Every
new bridge.toml is loaded with the bridge's own loader before it is planned, so setup never
writes a config ``mint-bridge run`` would refuse.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any, Protocol

from bridge.client.node_config import load_bridge_config
from bridge.core.errors import BridgeError
from bridge.core.tomlconf import load_toml
from node_setup import changes
from node_setup.errors import SetupError


class Place(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


CONFIG_HEADER = """\
# mint-bridge bridge-node config, written by `mint-bridge setup bridge-node`.
# Every key is described in the reference bridge.toml: `mint-bridge examples copy DIR` puts
# it in DIR.
#
# Add a site reached over SSH (its host key is pinned only when it matches the fingerprint
# the site admin gave you by another channel):
#   mint-bridge setup add-site NAME --ssh HOST[:PORT] --fingerprint SHA256:...
# or a site that pulls jobs through the broker:
#   mint-bridge setup add-site NAME --broker https://BROKER --token-file FILE

[bridge]
# timeout = "12h"             # overall limit for one `mint-bridge run` (default: none)
"""


def host_block(
    alias: str,
    where: Place,
    user: str | None,
    identity: str,
    jump: str | None,
    known_hosts: str | None = None,
) -> str:
    """A ``Host`` block of mint-bridge's own SSH config (read by paramiko, as OpenSSH would).

    With ``known_hosts`` (a jump host's block), the block pins the host's key itself: for a
    ProxyJump, OpenSSH starts the jump's ``ssh`` with ``-F`` but none of our ``-o`` options, so
    without these lines the jump's key would be checked against ``~/.ssh/known_hosts`` and a
    prompt. paramiko checks every hop against the site's ``known_hosts`` and ignores them.
    """
    lines = [f"Host {alias}", f"    HostName {where.host}", f"    Port {where.port}"]
    if user:
        lines.append(f"    User {user}")
    lines.append(f"    IdentityFile {identity}")
    if jump:
        lines.append(f"    ProxyJump {jump}")
    if known_hosts:
        lines += [
            f"    UserKnownHostsFile {known_hosts}",
            "    GlobalKnownHostsFile none",
            "    StrictHostKeyChecking yes",
            "    UpdateHostKeys no",
            "    BatchMode yes",
        ]
    return "\n".join(lines) + "\n"


def merge_host_block(existing: str, name: str, block: str) -> str:
    """``existing`` with the ``Host name`` block replaced by ``block`` (or appended)."""
    out: list[str] = []
    skipping = False
    for line in existing.splitlines():
        words = line.split()
        if words and words[0].lower() in ("host", "match"):
            skipping = words[0].lower() == "host" and words[1:] == [name]
        if not skipping:
            out.append(line)
    body = "\n".join(out).rstrip("\n")
    return (body + "\n\n" if body else "") + block


# --- the site's entry in bridge.toml ---------------------------------------------------------


def plan_site_entry(
    plan: changes.Plan,
    config: str,
    name: str,
    table: dict[str, Any],
    force: bool,
    comments: dict[str, str] | None = None,
) -> None:
    existing = read_text(config)
    current = _site_table(config, name) if existing else None
    if current == table:
        plan.write(config, existing, 0o600, edit=True)  # nothing to do: shown as unchanged
        return
    base = _without_site(existing, name) if current is not None else existing
    entry = render_site_table(name, table, comments)
    text = (base or CONFIG_HEADER).rstrip("\n") + "\n\n" + entry
    _validate_bridge_config(text)
    plan.write(config, text, 0o600, edit=True, needs_force=current is not None)


def render_site_table(
    name: str, table: dict[str, Any], comments: dict[str, str] | None = None
) -> str:
    """The ``[sites.name]`` table; ``comments`` holds a comment line to put above a key."""
    lines = [f"[sites.{name}]"]
    for key, value in table.items():
        if comments and key in comments:
            lines.append(f"# {comments[key]}")
        lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def _site_table(config: str, name: str) -> dict[str, Any] | None:
    sites = load_toml(config).get("sites", {})
    found = sites.get(name) if isinstance(sites, dict) else None
    return found if isinstance(found, dict) else None


def _without_site(text: str, name: str) -> str:
    """``text`` without the ``[sites.name]`` table (up to the next table header)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        header = re.fullmatch(r"\s*\[+\s*([^\]]+?)\s*\]+\s*(#.*)?", line)
        if header:
            key = header.group(1).replace('"', "").replace(" ", "")
            skipping = key == f"sites.{name}" or key.startswith(f"sites.{name}.")
        if not skipping:
            out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


def _validate_bridge_config(text: str) -> None:
    with tempfile.TemporaryDirectory(prefix="mint-bridge-setup-") as tmp:
        path = os.path.join(tmp, "bridge.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            load_bridge_config(path)
        except BridgeError as exc:
            raise SetupError(f"the new bridge config would be invalid: {exc}") from exc


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read {path}: {exc}") from exc
