"""Who an SSH connection came from, for the audit log: address and key fingerprint.

The address is the client's ``ip:port`` from ``SSH_CONNECTION``. The key is read from the file
``SSH_USER_AUTH`` names, which OpenSSH's sshd writes for the forced command when its config has
``ExposeAuthInfo yes`` (lines such as ``publickey ssh-ed25519 AAAA...``); its fingerprint is
computed as ``ssh-keygen -l`` prints it (``SHA256:`` and unpadded base64). Without that setting
the key is unknown (``None``): sshd tells a forced command nothing else about the key.

Never: trust the client's own words about who it is, or fail a connection over this.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Mapping

from bridge.site.audit import Peer

log = logging.getLogger(__name__)
# The auth info file holds a line per method used; a key line is short.
_MAX_AUTH_INFO = 64 * 1024


def ssh_peer(environ: Mapping[str, str]) -> Peer:
    """The peer of this site entry: ``ssh`` under sshd, ``local`` on plain pipes."""
    words = environ.get("SSH_CONNECTION", "").split()
    if len(words) < 2:
        return Peer("local", "stdin")
    return Peer("ssh", f"{words[0]}:{words[1]}", key=key_fingerprint(environ.get("SSH_USER_AUTH")))


def key_fingerprint(auth_info_path: str | None) -> str | None:
    """``SHA256:...`` of the public key the client logged in with, or None if not exposed."""
    if not auth_info_path:
        return None
    try:
        with open(auth_info_path, "rb") as handle:
            text = handle.read(_MAX_AUTH_INFO).decode("ascii", "replace")
    except OSError as exc:
        log.info("SSH_USER_AUTH file unreadable: %s", exc.strerror)
        return None
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "publickey":
            return fingerprint(words[2])
    return None


def fingerprint(key_base64: str) -> str | None:
    """OpenSSH's SHA-256 fingerprint of a key blob given as base64 (None if not base64)."""
    try:
        blob = base64.b64decode(key_base64, validate=True)
    except (binascii.Error, ValueError):
        return None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"
