"""Telling a live client from one that went away, on real sockets, and handing back an answer
that was never written (``broker.delivery``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Response

from broker import delivery
from broker.notify import Waiter


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair on loopback: (the server's end, the client's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield server, client
    for sock in (server, client):
        sock.close()


def test_a_connected_peer_is_open_even_with_unread_bytes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    assert delivery.peer_open(server)
    client.sendall(b"more")
    time.sleep(0.05)
    assert delivery.peer_open(server)
    assert server.recv(4) == b"more"  # nothing was consumed by the check


def test_a_closed_peer_is_seen_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.close()
    time.sleep(0.05)
    assert not delivery.peer_open(server)


def test_a_peer_that_closed_behind_unread_bytes_is_gone(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # A TLS client's close alert is such a byte string before the FIN.
    server, client = pair
    client.sendall(b"\x15\x03\x03\x00\x02\x01\x00")
    client.close()
    time.sleep(0.05)
    assert not delivery.peer_open(server)


def test_a_reset_peer_is_gone(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # linger 0: RST instead of FIN
    time.sleep(0.05)
    assert not delivery.peer_open(server)


def test_a_closed_socket_of_our_own_is_gone(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    server.close()
    assert not delivery.peer_open(server)


def test_the_peek_fallback_sees_eof_but_not_data(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    assert not delivery._peeks_eof(server.fileno())  # nothing to read: still there
    client.sendall(b"x")
    time.sleep(0.05)
    assert not delivery._peeks_eof(server.fileno())
    assert server.recv(1) == b"x"
    client.close()
    time.sleep(0.05)
    assert delivery._peeks_eof(server.fileno())


def test_an_answer_written_to_the_end_is_not_handed_back() -> None:
    handed: list[str] = []
    response = delivery.on_undelivered(Response(b'{"job": 1}'), lambda: handed.append("x"))
    assert response.headers["Content-Length"] == "10"
    body = response.response
    assert b"".join(body) == b'{"job": 1}'  # type: ignore[arg-type]
    body.close()  # type: ignore[union-attr]
    assert handed == []


def test_an_answer_whose_write_failed_is_handed_back() -> None:
    handed: list[str] = []
    response = delivery.on_undelivered(Response(b"{}"), lambda: handed.append("x"))
    pieces = iter(response.response)
    assert next(pieces) == b"{}"
    # The server's write of that piece raised: it closes the iterable without asking for more.
    response.response.close()  # type: ignore[union-attr]
    assert handed == ["x"]


class _RecordingEvent(threading.Event):
    """An event that records the timeout of every wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        return super().wait(timeout)


def test_a_waiter_waits_at_most_the_slice_it_is_given() -> None:
    waiter = Waiter(time.monotonic() + 30)
    waiter.event = event = _RecordingEvent()
    assert not waiter.wait(0.05)
    assert event.timeouts == [0.05]  # the slice, not the 30 s left to the deadline
    event.set()
    assert waiter.wait(0.05)
    assert waiter.wait() and event.timeouts[-1] is not None and event.timeouts[-1] > 0.05
