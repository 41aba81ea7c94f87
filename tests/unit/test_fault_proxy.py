"""The fault proxy itself, against a loopback echo server: each fault fires at its offset."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.fault_proxy import Fault, FaultProxy


def _echo(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_echo_one, args=(conn,), daemon=True).start()


def _echo_one(conn: socket.socket) -> None:
    with contextlib.suppress(OSError), conn:
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_echo, args=(listener,), daemon=True).start()
    relay = FaultProxy(listener.getsockname()[1])
    yield relay
    relay.close()
    listener.close()


def _exchange(port: int, payload: bytes, timeout: float = 5) -> bytes:
    """Send ``payload``, half-close, read until EOF or an error; return what came back."""
    got = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sender = threading.Thread(target=_send, args=(sock, payload), daemon=True)
        sender.start()
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                got += data
    return bytes(got)


def _send(sock: socket.socket, payload: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)


PAYLOAD = os.urandom(256 * 1024)


def test_clean_relay_is_byte_identical(proxy: FaultProxy) -> None:
    back = _exchange(proxy.port, PAYLOAD)
    assert hashlib.sha256(back).digest() == hashlib.sha256(PAYLOAD).digest()
    assert proxy.carried == {"up": len(PAYLOAD), "down": len(PAYLOAD)}
    assert proxy.fired == []


@pytest.mark.parametrize("direction", ["up", "down"])
def test_cut_at_an_offset_resets_the_connection(proxy: FaultProxy, direction: str) -> None:
    proxy.arm(Fault("cut", direction, at=1000))  # type: ignore[arg-type]
    back = _exchange(proxy.port, PAYLOAD)
    assert len(back) <= 1000
    assert back == PAYLOAD[: len(back)]
    assert proxy.fired == [("cut", direction, 1000)]
    # Only the next connection: the one after is clean.
    assert _exchange(proxy.port, PAYLOAD) == PAYLOAD


def test_truncate_delivers_exactly_the_prefix(proxy: FaultProxy) -> None:
    proxy.arm(Fault("truncate", "down", at=12345))
    assert _exchange(proxy.port, PAYLOAD) == PAYLOAD[:12345]


def test_blackhole_holds_the_connection_silent(proxy: FaultProxy) -> None:
    proxy.arm(Fault("blackhole", "down", at=100))
    with (
        pytest.raises(TimeoutError),
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1) as sock,
    ):
        sock.sendall(PAYLOAD[:5000])
        got = b""
        while len(got) < 5000:
            got += sock.recv(65536)
    assert proxy.fired == [("blackhole", "down", 100)]


def test_delay_and_throttle_keep_the_bytes(proxy: FaultProxy) -> None:
    proxy.arm(Fault("delay", "up", at=10, seconds=0.2), Fault("throttle", "down", at=0,
                                                              rate=4 * 1024 * 1024))
    assert _exchange(proxy.port, PAYLOAD) == PAYLOAD
    assert sorted(a for a, _, _ in proxy.fired) == ["delay", "throttle"]


def test_seeded_random_offset_replays() -> None:
    first = Fault.random(42, "cut", "down", 100, 100_000)
    again = Fault.random(42, "cut", "down", 100, 100_000)
    other = Fault.random(43, "cut", "down", 100, 100_000)
    assert first.at == again.at
    assert 100 <= first.at <= 100_000
    assert other.at != first.at


def test_cut_all_resets_open_connections(proxy: FaultProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        proxy.cut_all()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""


@pytest.mark.parametrize(("fault", "message"), [
    (dict(action="zap"), "unknown fault action"),
    (dict(action="cut", direction="sideways"), "direction must be"),
    (dict(action="cut", at=-1), "at must be >= 0"),
    (dict(action="throttle"), "throttle needs rate"),
])  # fmt: skip
def test_bad_fault_names_the_field(fault: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fault(**fault)  # type: ignore[arg-type]


def _echoed(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` on an open connection and read back as many bytes (or what came)."""
    sock.sendall(payload)
    got = bytearray()
    with contextlib.suppress(OSError):
        while len(got) < len(payload) and (data := sock.recv(65536)):
            got += data
    return bytes(got)


def test_an_offset_counts_from_arming_on_a_connection_already_open(proxy: FaultProxy) -> None:
    # A keep-alive connection that carried a large transfer before the fault was armed: the
    # fault must hit the next transfer at its own offset, not the next byte that passes.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
        assert _echoed(sock, PAYLOAD) == PAYLOAD
        proxy.arm(Fault("truncate", "down", at=1000))
        assert _echoed(sock, b"x" * 500) == b"x" * 500  # below the offset: untouched
        assert proxy.fired == []
        back = _echoed(sock, PAYLOAD)
    assert back == PAYLOAD[:500]  # 500 + 500 = the armed offset of 1000 bytes
    assert proxy.fired == [("truncate", "down", 1000)]
