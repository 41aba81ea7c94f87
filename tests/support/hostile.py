"""Hostile connections to a loopback server, for the slowloris tests and benchmark.

``HostileCrowd`` opens, from chosen loopback source addresses (any 127.x.y.z is this machine
on Linux), connections that send nothing, connections that finish a TLS handshake and then
send nothing, and connections that send a request header one byte a second. It records when
the server closed each one (``closed_after``), so a test can check that the server's
deadline, not the client, ended it. Everything here only ever connects to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

DRIBBLE_HEADER = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 4000


def client_hello() -> bytes:
    """The first bytes a TLS client sends (its ClientHello), made with a memory BIO."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# idle: TCP, sends nothing; hello: TCP, a ClientHello a byte a second; tls-idle: a finished
# handshake, then nothing; dribble: a finished handshake, then a header a byte a second.
KINDS = ("idle", "hello", "tls-idle", "dribble")
DRIBBLED = {"hello": client_hello(), "dribble": DRIBBLE_HEADER}


def raise_open_files(wanted: int) -> None:
    """Let this process hold ``wanted`` sockets (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass
class Hostile:
    kind: str  # one of KINDS
    source: str
    sock: socket.socket | ssl.SSLSocket
    opened: float
    closed_at: float | None = None
    sent: int = 0

    @property
    def closed_after(self) -> float | None:
        return None if self.closed_at is None else self.closed_at - self.opened


def connect_from(source: str, port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


@dataclass
class HostileCrowd:
    port: int
    ca_bundle: Path | None = None
    members: list[Hostile] = field(default_factory=list)
    refused: int = 0
    refill: bool = False  # open a new connection of the same kind for each one closed
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def open(self, kind: str, count: int, sources: list[str]) -> list[Hostile]:
        """``count`` connections of ``kind``, spread evenly over ``sources``; a connection
        the server refuses (reset, or closed during the handshake) counts in ``refused``."""
        opened = []
        for index in range(count):
            source = sources[index % len(sources)]
            try:
                sock: socket.socket | ssl.SSLSocket = connect_from(source, self.port)
                if kind in ("tls-idle", "dribble"):
                    sock = self._tls(sock)
            except (ConnectionError, ssl.SSLError, TimeoutError):
                self.refused += 1
                continue
            sock.setblocking(False)
            opened.append(Hostile(kind, source, sock, time.monotonic()))
        self.members.extend(opened)
        return opened

    def _tls(self, sock: socket.socket) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        return context.wrap_socket(sock, server_hostname="127.0.0.1")

    def start(self) -> None:
        """Watch for closes, and send a byte a second on every dribbling member (one thread:
        a TLS connection must not be used by two threads at once)."""
        self._threads = [threading.Thread(target=self._watch, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _watch(self) -> None:
        next_dribble = time.monotonic() + 1.0
        with selectors.DefaultSelector() as selector:
            for member in self.members:
                selector.register(member.sock, selectors.EVENT_READ, member)
            while not self._stop.is_set():
                for key, _ in selector.select(0.2):
                    member = key.data
                    if self._peer_closed(member.sock):
                        member.closed_at = time.monotonic()
                        selector.unregister(member.sock)
                        if self.refill:
                            for new in self.open(member.kind, 1, [member.source]):
                                selector.register(new.sock, selectors.EVENT_READ, new)
                if time.monotonic() >= next_dribble:
                    next_dribble += 1.0
                    self._dribble()

    @staticmethod
    def _peer_closed(sock: socket.socket | ssl.SSLSocket) -> bool:
        try:
            return sock.recv(4096) == b""
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except OSError:  # a reset, or a TLS alert then the close
            return True

    def _dribble(self) -> None:
        for member in self.members:
            if member.kind not in DRIBBLED or member.closed_at is not None:
                continue
            data = DRIBBLED[member.kind]
            with contextlib.suppress(OSError, ssl.SSLError):
                member.sock.send(data[member.sent % len(data):][:1])
                member.sent += 1

    def open_count(self) -> int:
        return sum(1 for m in self.members if m.closed_at is None)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for member in self.members:
            with contextlib.suppress(OSError):
                member.sock.close()
