"""The connection front's rules, as plain functions and small classes the worker uses.

``broker.edge_worker`` runs the TLS handshake and reads each request's header in its event
loop, so no server thread waits for a client that sends nothing; these are the pieces it
decides with: which pool a request goes to (``is_long_poll``), how many connections one
address may hold (``AddressCounter``), when a header is complete (``header_end``) and the
deadline that cuts off a request body sent too slowly (``BodyDeadline``). Nothing here
touches a socket except ``BodyDeadline.recv``, and nothing logs a request's content.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# The long-poll routes: a claim always waits (up to 50 s, its default); a status, log or lease
# request waits when it carries ``wait``. Ordinary requests never go to the long-poll pool.
CLAIM_PATHS = ("/api/v1/agent/claim",)
WAIT_PARAM = b"wait"
HEADER_END = b"\r\n\r\n"


def request_target(request_line: bytes) -> tuple[bytes, bytes, bytes]:
    """(method, path, query) of an HTTP/1.x request line; empty parts if it is malformed."""
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return b"", b"", b""
    path, _, query = parts[1].partition(b"?")
    return parts[0], path, query


def is_long_poll(head: bytes) -> bool:
    """Whether the request whose header starts ``head`` may wait for a change (a long poll)."""
    method, path, query = request_target(head.lstrip(b"\r\n").split(b"\r\n", 1)[0])
    if method == b"POST" and path.decode("latin-1") in CLAIM_PATHS:
        return True
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == WAIT_PARAM and value not in (b"", b"0"):
            return True
    return False


def header_end(buffer: bytes | bytearray) -> int:
    """The offset just past the request header in ``buffer``, or -1 while it is incomplete.
    Blank lines before a request (RFC 9112 sec. 2.2 lets a server ignore them) are skipped."""
    start = 0
    while buffer.startswith(b"\r\n", start):
        start += 2
    found = buffer.find(HEADER_END, start)
    return -1 if found < 0 else found + len(HEADER_END)


@dataclass
class AddressCounter:
    """Open connections per source address, with a cap; thread-safe (closes may come from
    worker threads)."""

    cap: int
    _counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, address: str) -> bool:
        """Count one more connection from ``address``; False (nothing counted) at the cap."""
        with self._lock:
            count = self._counts.get(address, 0)
            if count >= self.cap:
                return False
            self._counts[address] = count + 1
            return True

    def release(self, address: str) -> None:
        with self._lock:
            count = self._counts.get(address, 0) - 1
            if count > 0:
                self._counts[address] = count
            else:
                self._counts.pop(address, None)

    def count(self, address: str) -> int:
        with self._lock:
            return self._counts.get(address, 0)


class RefusalLog:
    """Says once per address and interval that its connections are refused, with the count
    since the last line, so a flood of refusals cannot flood the log."""

    def __init__(self, emit: Callable[[str, int], None], interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.emit, self.interval, self.clock = emit, interval, clock
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}

    def refused(self, address: str) -> None:
        self._pending[address] = self._pending.get(address, 0) + 1
        now = self.clock()
        if now - self._last.get(address, -math.inf) >= self.interval:
            self._last[address] = now
            self.emit(address, self._pending.pop(address))


class BodyDeadline:
    """A socket's ``recv`` for a request body: the body may pause at most ``idle`` seconds,
    and must keep an average of ``min_rate`` bytes/s after a grace of ``idle`` seconds, so a
    client dribbling a byte a second frees its thread as surely as a silent one.

    Every other attribute is the socket's own (gunicorn writes the answer through it).
    """

    def __init__(self, sock: socket.socket, idle: float, min_rate: int,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._sock, self._idle, self._rate, self._clock = sock, idle, min_rate, clock
        self._start = clock()
        self._received = 0

    def deadline(self) -> float:
        allowance = self._received / self._rate if self._rate > 0 else math.inf
        return self._start + self._idle + allowance

    def recv(self, size: int) -> bytes:
        remaining = self.deadline() - self._clock()
        if remaining <= 0:
            raise TimeoutError(f"request body slower than {self._rate} bytes/s")
        previous = self._sock.gettimeout()
        # The app may have set a shorter timeout itself (``request_body``); keep the shorter.
        limit = min(remaining, self._idle, previous if previous is not None else math.inf)
        self._sock.settimeout(limit)
        try:
            data = self._sock.recv(size)
        finally:
            self._sock.settimeout(previous)
        self._received += len(data)
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)
