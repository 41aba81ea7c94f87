"""MInt's line in a site account's ``~/.ssh/authorized_keys``: built, quoted and merged.

The line forces our entry point whatever the client asks for, and admits only MInt's bridge
node::

    command="<mint-bridge> site serve-ssh --config <site.toml>",restrict,from="<ip>" <key>

OpenSSH hands the ``command=`` text to the account's shell, so paths are quoted for a POSIX
shell (``shlex``) and then for the option's own syntax, where only ``\\"`` is an escape. A
file given as MInt's key must hold exactly one public key (never a private key, never a line
with options of its own). Merging is idempotent: the file gets exactly one line for the key;
setup's own earlier line (same forced command) is updated in place (a new ``from=``), while a
line of the admin's for the same key (another command, or several) is only replaced with
``--force``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import shlex
import struct
from dataclasses import dataclass

from node_setup.errors import InvalidKey, SetupError

KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: str  # base64, as in the .pub file
    comment: str = ""

    @property
    def text(self) -> str:
        return f"{self.type} {self.blob}" + (f" {self.comment}" if self.comment else "")

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_public_key(text: str, source: str) -> PublicKey:
    """The one public key in ``text`` (a .pub file's content); InvalidKey says what is wrong."""
    if "PRIVATE KEY" in text:
        raise InvalidKey(
            f"{source} is a PRIVATE key; never copy it off the bridge node: give the .pub file"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise InvalidKey(f"{source} must hold exactly one public key line, found {len(lines)}")
    words = lines[0].split(None, 2)
    if len(words) < 2 or words[0] not in KEY_TYPES:
        raise InvalidKey(
            f"{source} is not an OpenSSH public key (expected '<type> <base64> [comment]' with "
            f"type one of {', '.join(KEY_TYPES)})"
        )
    key_type, blob = words[0], words[1]
    _check_blob(key_type, blob, source)
    comment = words[2] if len(words) > 2 else ""
    if any(ord(ch) < 32 for ch in comment):
        raise InvalidKey(f"{source}: the key's comment holds control characters")
    return PublicKey(key_type, blob, comment)


def _check_blob(key_type: str, blob: str, source: str) -> None:
    """The base64 must decode to a key blob that names the same type (as sshd checks)."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidKey(f"{source}: the key data is not valid base64") from exc
    if len(raw) < 4:
        raise InvalidKey(f"{source}: the key data is truncated")
    (length,) = struct.unpack(">I", raw[:4])
    if raw[4 : 4 + length] != key_type.encode():
        raise InvalidKey(f"{source}: the key data does not match its type {key_type}")


def check_from(value: str) -> str:
    """MInt's address(es) for ``from=``: IPs or CIDR networks, comma-separated, no host names.

    Host names are refused: ``from=`` with a name depends on reverse DNS at the site.
    """
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise SetupError("--mint-ip is empty; give the bridge node's IP address")
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise SetupError(
                f"--mint-ip {item!r} is not an IP address or network (e.g. 192.0.2.10 or "
                "192.0.2.0/28); ask MInt's admin for the bridge node's address"
            ) from exc
    return ",".join(items)


def forced_command(mint_bridge: str, site_config: str) -> str:
    """The shell text sshd runs for MInt's key; every path quoted for a POSIX shell."""
    for path in (mint_bridge, site_config):
        if "\n" in path or "\r" in path or "\0" in path:
            raise SetupError(f"path {path!r} holds a line break; authorized_keys is line-based")
    return shlex.join([mint_bridge, "site", "serve-ssh", "--config", site_config])


def key_line(key: PublicKey, command: str, mint_ip: str) -> str:
    quoted = command.replace('"', '\\"')  # OpenSSH's option syntax has no other escape
    return f'command="{quoted}",restrict,from="{check_from(mint_ip)}" {key.text}'


def merge(existing: str, line: str, key: PublicKey) -> tuple[str, bool]:
    """The file's new content with exactly one ``line`` for ``key``, and whether an existing
    line of the admin's (the same key with another command, or duplicates) is replaced.

    A single earlier line of setup's own (the same forced command, e.g. with another
    ``from=``) is setup's to update: replacing it is not the admin's line being replaced."""
    lines = existing.splitlines()
    positions = [i for i, current in enumerate(lines) if key_blob(current) == key.blob]
    if [lines[i] for i in positions] == [line]:
        return existing, False
    if not positions:
        body = "\n".join(lines)
        return (body + "\n" if body else "") + line + "\n", False
    # In place of the first occurrence, so the file keeps its order; duplicates go.
    others = [current for i, current in enumerate(lines) if i not in positions]
    first = positions[0]
    admins = len(positions) > 1 or _command_of(lines[first]) != _command_of(line)
    return "\n".join([*others[:first], line, *others[first:]]) + "\n", admins


def _command_of(line: str) -> str | None:
    """The ``command="..."`` option of a line, as written (None without one)."""
    for word in _split_outside_quotes(line.strip())[:1]:
        for option in _split_options(word):
            if option.startswith("command="):
                return option
    return None


def _split_options(text: str) -> list[str]:
    """Options are comma-separated; a comma inside quotes belongs to its option."""
    options: list[str] = []
    current: list[str] = []
    quoted = False
    previous = ""
    for char in text:
        if char == '"' and previous != "\\":
            quoted = not quoted
        if char == "," and not quoted:
            options.append("".join(current))
            current = []
        else:
            current.append(char)
        previous = char
    options.append("".join(current))
    return options


def key_blob(line: str) -> str | None:
    """The base64 key of an authorized_keys line (options may hold quoted spaces)."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    words = _split_outside_quotes(stripped)
    for index, word in enumerate(words[:-1]):
        if word in KEY_TYPES:
            return words[index + 1]
    return None


def _split_outside_quotes(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and quoted and text[index + 1 : index + 2] == '"':
            current.append('\\"')
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        if char in " \t" and not quoted:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
        index += 1
    if current:
        words.append("".join(current))
    return words
