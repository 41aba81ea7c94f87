"""Whether the client of the current request is still there, and whether its answer left.

A long poll can outlive its client: an agent that stopped (SIGTERM, a crash, a cut network)
leaves its claim waiting on a socket nobody reads. Handing a job to it would park the job
until its lease lapses. So a claim looks at its connection right before it commits
(``client_connected``), a long poll looks again every few seconds while it waits (so a dead one
frees its thread), and the answer of a claim is written through ``on_undelivered``, which hands
the job back at once when the write fails.

The check asks the kernel about the request's socket (``gunicorn.socket`` in the WSGI
environ): the peer's FIN or a reset shows as ``POLLRDHUP``/``POLLHUP``/``POLLERR`` without
reading anything, TLS or not. Outside gunicorn (Flask's test client) there is no socket and a
client counts as connected. A client that half-closes its side while it still waits for the
answer counts as gone; no HTTP client we serve does that.

This module never reads from or writes to a socket itself and never touches the store.
"""

from __future__ import annotations

import logging
import os
import select
import socket
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, request

log = logging.getLogger(__name__)

# Linux reports a peer's shutdown without any data being read; elsewhere a peek for EOF is the
# fallback (it cannot see an EOF queued behind unread bytes).
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_GONE = _POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL


class ClientGone(Exception):
    """The client closed its connection before it got its answer; nothing is sent to it."""


def client_connected() -> bool:
    """False once the current request's client has closed or reset its connection."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return True  # not under gunicorn: there is no socket to ask
    return peer_open(sock)


def peer_open(sock: Any) -> bool:
    """False if the peer of ``sock`` closed or reset the connection (never blocks)."""
    try:
        fd = sock.fileno()
    except OSError:
        return False
    if fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN | _POLLRDHUP)
    try:
        events = poller.poll(0)
    except OSError:
        return False
    mask = events[0][1] if events else 0
    if mask & _GONE:
        return False
    if mask & select.POLLIN and not _POLLRDHUP:
        return not _peeks_eof(fd)
    return True


def _peeks_eof(fd: int) -> bool:
    """Whether the raw socket (below any TLS layer) reads as closed, without consuming data."""
    try:
        raw = socket.socket(fileno=os.dup(fd))  # ours to close; ``fd`` stays the server's
    except OSError:
        return True
    with raw:
        try:
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def on_undelivered(response: Response, hand_back: Callable[[], None]) -> Response:
    """Write ``response`` so that ``hand_back`` runs if its body never reached the socket.

    gunicorn writes each piece the app yields and closes the iterable afterwards, also when a
    write failed; a body not written to the end therefore calls ``hand_back`` on close. Written
    is not read: a peer that vanished after the bytes left is the lease's case, not this one.
    """
    body = response.get_data()
    response.response = _watched(body, hand_back)
    response.direct_passthrough = True  # our iterable goes to the server as it is
    response.headers["Content-Length"] = str(len(body))
    return response


def _watched(body: bytes, hand_back: Callable[[], None]) -> Iterator[bytes]:
    delivered = False
    try:
        yield body
        delivered = True  # the server asked for more: the write of the body returned
    finally:
        if not delivered:
            hand_back()
