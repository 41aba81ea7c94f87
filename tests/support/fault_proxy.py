"""A TCP fault proxy for the resilience tests: a relay to one upstream port that injects faults.

The proxy listens on a free loopback port and relays every connection to ``target``. Faults are
``Fault`` rules, armed from the test thread at any time with ``arm``. A fault fires on the first
connection whose bytes in its direction ("up": client to server, "down": server to client) pass
``at``, ``times`` times in all (None: on every such connection); a connection that carries less
leaves it armed, so an offset inside a large transfer hits that transfer, not a small request.
On a connection already open when the fault is armed (HTTP keep-alive), ``at`` counts from what
it had carried by then: bytes of an earlier transfer never fire a fault meant for a later one.

- ``cut``: close both sockets with a TCP reset, as a dropped link or a killed peer would;
- ``truncate``: forward up to ``at`` bytes, then half-close (FIN) and drop the rest;
- ``blackhole``: forward up to ``at`` bytes, then swallow everything, holding both sockets open;
- ``delay``: pause ``seconds`` once before forwarding past ``at``;
- ``throttle``: past ``at``, forward at most ``rate`` bytes per second.

``Fault.random(seed, ...)`` picks the offset from a seeded generator, so a failing run can be
replayed. TLS and SSH pass through unchanged: the proxy only sees bytes. Threads, not asyncio:
the tests drive it from their own (blocking) thread and read its counters directly.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["up", "down"]
Action = Literal["cut", "truncate", "blackhole", "delay", "throttle"]
ACTIONS: tuple[Action, ...] = ("cut", "truncate", "blackhole", "delay", "throttle")


@dataclass
class Fault:
    action: Action
    direction: Direction = "down"
    at: int = 0
    times: int | None = 1  # connections it still applies to; None: every one
    seconds: float = 0.0  # delay
    rate: int = 0  # throttle, bytes per second
    # What each connection open at arming had carried in ``direction`` (by serial): ``at`` counts
    # from there on it.
    carried_before: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; use one of {ACTIONS}")
        if self.direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {self.direction!r}")
        if self.at < 0:
            raise ValueError(f"at must be >= 0, not {self.at}")
        if self.action == "throttle" and self.rate <= 0:
            raise ValueError("a throttle needs rate > 0 (bytes per second)")

    @classmethod
    def random(cls, seed: int, action: Action, direction: Direction, low: int, high: int,
               **kwargs: object) -> Fault:  # fmt: skip
        """A fault at a byte offset drawn from [low, high] by a generator seeded with ``seed``."""
        at = random.Random(seed).randint(low, high)
        return cls(action, direction, at, **kwargs)  # type: ignore[arg-type]


def _reach(fault: Fault, conn: _Conn, way: Direction, more: int) -> int:
    """The bytes ``conn`` will have carried in ``way`` with ``more``, counted for ``fault``."""
    return conn.carried[way] - fault.carried_before.get(conn.serial, 0) + more


@dataclass
class _Conn:
    client: socket.socket
    server: socket.socket
    faults: dict[str, Fault | None]
    serial: int = 0  # the proxy's count of connections when this one came
    carried: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    closed: bool = False


class FaultProxy:
    """A relay to ``host:port`` on ``127.0.0.1:<self.port>``; stop it with ``close``."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.lock = threading.Lock()
        self.pending: list[Fault] = []
        self.fired: list[tuple[Action, Direction, int]] = []  # (action, direction, offset)
        self.carried = {"up": 0, "down": 0}
        self.connections = 0
        self.conns: list[_Conn] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.refusing = False
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def arm(self, *faults: Fault) -> None:
        with self.lock:
            for fault in faults:
                fault.carried_before = {
                    conn.serial: conn.carried[fault.direction] for conn in self.conns
                }
            self.pending.extend(faults)

    def disarm(self) -> None:
        with self.lock:
            self.pending.clear()

    def cut_all(self) -> None:
        """Reset every open connection now (a link flap), whatever rules are armed."""
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            self._close(conn, reset=True)

    def _take(self, conn: _Conn, direction: Direction, more: int) -> Fault | None:
        """The first armed fault in ``direction`` whose offset on ``conn`` is below what it
        will have carried with ``more`` bytes."""
        for fault in self.pending:
            if fault.direction == direction and fault.at < _reach(fault, conn, direction, more):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.pending.remove(fault)
                return fault
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                self._reset(client)
                continue
            with self.lock:
                self.connections += 1
                conn = _Conn(client, server, {"up": None, "down": None}, self.connections)
                self.conns.append(conn)
            for way in ("up", "down"):
                threading.Thread(target=self._pump, args=(conn, way), daemon=True).start()

    def _pump(self, conn: _Conn, way: Direction) -> None:
        src, dst = (conn.client, conn.server) if way == "up" else (conn.server, conn.client)
        fault: Fault | None = None
        try:
            while data := src.recv(65536):
                if fault is None and not conn.faults[way]:
                    with self.lock:
                        fault = self._take(conn, way, len(data))
                    conn.faults[way] = fault
                if fault is not None and _reach(fault, conn, way, len(data)) > fault.at:
                    keep = max(0, fault.at - _reach(fault, conn, way, 0))
                    head, data = data[:keep], data[keep:]
                    if head:
                        self._send(conn, dst, way, head)
                    taken, action = fault, fault.action
                    self._fired(fault, way)
                    fault = None
                    if action == "cut":
                        self._close(conn, reset=True)
                        return
                    if action == "truncate":
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        self._drain(src)
                        return
                    if action == "blackhole":
                        self._drain(src)
                        return
                    if action == "delay":
                        time.sleep(taken.seconds)
                    if action == "throttle":
                        self._throttled(conn, src, dst, way, data, taken.rate)
                        return
                if data:
                    self._send(conn, dst, way, data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn, reset=False)

    def _throttled(self, conn: _Conn, src: socket.socket, dst: socket.socket, way: Direction,
                   data: bytes, rate: int) -> None:  # fmt: skip
        chunk = max(1, rate // 20)
        while True:
            while data:
                piece, data = data[:chunk], data[chunk:]
                self._send(conn, dst, way, piece)
                time.sleep(len(piece) / rate)
            data = src.recv(chunk)
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return

    def _send(self, conn: _Conn, dst: socket.socket, way: Direction, data: bytes) -> None:
        dst.sendall(data)
        with self.lock:
            conn.carried[way] += len(data)
            self.carried[way] += len(data)

    def _fired(self, fault: Fault, way: Direction) -> None:
        with self.lock:
            self.fired.append((fault.action, way, fault.at))

    def _drain(self, src: socket.socket) -> None:
        """Read and drop until the peer gives up, so it sees no error from us."""
        with contextlib.suppress(OSError):
            while src.recv(65536):
                pass

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        # SO_LINGER 0: close sends an RST at once, as a crashed peer's kernel would.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # SHUT_RD wakes a pump thread blocked in recv on it (close alone would not on Linux).
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        sock.close()

    def _close(self, conn: _Conn, reset: bool) -> None:
        with self.lock:
            if conn.closed:
                return
            conn.closed = True
            with contextlib.suppress(ValueError):
                self.conns.remove(conn)
        for sock in (conn.client, conn.server):
            if reset:
                self._reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut_all()
