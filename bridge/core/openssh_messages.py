"""What the OpenSSH client's exit status and stderr say, shared by every place that runs ``ssh``
(the bridge's OpenSSH transport to a site, a site's scheduler commands on a login node).

The messages are stable across many OpenSSH releases. Callers look for the first table whose
pattern occurs in ssh's stderr and name the failure in their own terms.
"""

from __future__ import annotations

SSH_FAILURE = 255  # ssh's own exit status for its failures (the remote command's otherwise)

# The pinned host key did not match, or none is pinned.
HOST_KEY = (
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "host key is known for",
    "No matching host key type",
)
# The server refused every key offered.
AUTH = ("Permission denied", "Too many authentication failures", "no more authentication methods")
# ssh could not use its configuration (file, option or permissions).
CONFIG = ("Bad configuration option", "Can't open user config file", "Bad owner or permissions",
          "no argument after keyword", "terminating, ")  # fmt: skip


def found(patterns: tuple[str, ...], text: str) -> bool:
    """Whether any of ``patterns`` occurs in ``text`` (ssh's stderr)."""
    return any(pattern in text for pattern in patterns)
