"""Loopback networking for tests and benchmarks: a free TCP port for a server to listen on.

Only ever binds to 127.0.0.1; nothing here opens a port that stays open.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
