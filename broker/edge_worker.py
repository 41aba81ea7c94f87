"""gunicorn's gthread worker with a front that no silent or slow client can exhaust.

Why not plain gthread: it hands each new connection to a server thread that does the TLS
handshake and reads the request header with blocking calls and no deadline, so 64 connections
that send nothing (or a byte of a ClientHello) held every thread and ``/health`` timed out.
Why not another worker class: gevent/eventlet would monkey-patch the store's locks and the
notifier's events, and the long-poll design (a blocked thread per waiter, woken in-process)
is what makes wakeups exact. So this worker keeps gthread's threads for the application and
moves everything a client controls before its request is complete into the event loop, which
never blocks:

- the TLS handshake runs non-blocking in the loop, with ``server.handshake_timeout``;
- the request header is read non-blocking in the loop, with ``server.header_timeout`` (from
  the end of the handshake, or from the first byte of a kept-alive connection's next request);
  only a complete header reaches a thread;
- a request body must keep flowing (``limits.body_timeout``, ``limits.min_body_rate``,
  ``broker.edge.BodyDeadline``);
- each source address may hold ``server.max_connections_per_address`` connections; more are
  refused at accept (reset) and logged, once per address every 10 s;
- long polls (claims, and requests with ``wait``) run in their own pool of ``server.threads``
  threads, ordinary requests (uploads, downloads, ``/health``) in ``server.request_threads``,
  so waiters can never starve them;
- a closing connection lingers (RFC 9112 sec. 9.6) in the loop, not in a blocking call on it.

Measured numbers are in ``benchmarks/broker_slowloris.py``'s docstring and the README.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import selectors
import socket
import ssl
import time
from concurrent import futures
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gunicorn import http  # type: ignore[import-untyped]
from gunicorn import sock as gsock
from gunicorn.workers.gthread import TConn, ThreadWorker  # type: ignore[import-untyped]

from broker.config import BrokerConfig
from broker.edge import AddressCounter, BodyDeadline, RefusalLog, header_end, is_long_poll
from broker.runtime import EXTENSION

log = logging.getLogger(__name__)

# Header bytes read in the loop at most; gunicorn's parser refuses a longer header itself.
MAX_HEADER_BYTES = 64 * 1024
READ_SIZE = 16 * 1024
# A closing connection is drained this long and this far for its last bytes (gunicorn's own).
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
# How often the loop looks for connections past their deadline: deadlines are seconds long.
SCAN_INTERVAL = 0.2


class Phase(Enum):
    HANDSHAKE = "TLS handshake"
    HEADER = "request header"
    LINGER = "closing"


@dataclass
class Waiting:
    """A connection the loop owns until its header is complete (or it is closed)."""

    conn: EdgeConn
    phase: Phase
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    drained: int = 0


class EdgeConn(TConn):  # type: ignore[misc]
    """gunicorn's connection, releasing its place in the per-address count when it closes."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any,
                 counter: AddressCounter) -> None:  # fmt: skip
        super().__init__(cfg, sock, client, server)
        self.counter = counter
        self.address = client_address(client)
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.counter.release(self.address)

    def close(self, graceful: bool = False) -> None:
        self.release()
        super().close(graceful=False)  # lingering is the loop's job (EdgeWorker._linger)


def client_address(client: Any) -> str:
    if isinstance(client, tuple) and client:
        return str(client[0])
    return "unix"  # a UNIX socket has no peer address; all its connections count as one


def raise_open_files_limit(wanted: int) -> None:
    """Let this process hold ``wanted`` sockets if the hard limit allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class EdgeWorker(ThreadWorker):  # type: ignore[misc]
    """See the module docstring. Only the loop's parts differ from gthread's; requests are
    handled by gthread's own ``handle`` in a thread."""

    def init_process(self) -> None:
        self.waiting: dict[int, Waiting] = {}
        self.ssl_context: ssl.SSLContext | None = None
        if self.cfg.is_ssl:
            # Built once: gunicorn builds one per connection, reading the key file each time.
            self.ssl_context = gsock.ssl_context(self.cfg)
        raise_open_files_limit(self.cfg.worker_connections + 256)
        super().init_process()

    def run(self) -> None:
        config: BrokerConfig = self.wsgi.extensions[EXTENSION].config
        self.edge = config
        self.counter = AddressCounter(config.max_connections_per_address)
        self.refusals = RefusalLog(self._log_refusal)
        self.poll_pool = futures.ThreadPoolExecutor(
            max_workers=config.threads, thread_name_prefix="long-poll"
        )
        try:
            super().run()
        finally:
            self.poll_pool.shutdown(wait=False)

    # --- accepting ------------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        address = client_address(client_addr)
        if not self.counter.acquire(address):
            self.refusals.refused(address)
            _reset(client_sock)
            return
        try:
            sock = self._wrap(client_sock)
        except OSError as exc:
            # A client gone before we looked at it (reset before the TLS handshake began):
            # drop that one connection; letting it out of accept() would end the worker.
            log.debug("connection from %s closed before it was served: %s", address, exc)
            self.counter.release(address)
            with contextlib.suppress(OSError):
                client_sock.close()
            return
        self.nr_conns += 1
        conn = EdgeConn(self.cfg, sock, client_addr, listener.getsockname(), self.counter)
        if self.ssl_context is not None:
            self._wait(conn, Phase.HANDSHAKE, self.edge.handshake_timeout)
            self._handshake(conn)
        else:
            self._wait(conn, Phase.HEADER, self.edge.header_timeout)
            self._read_header(conn)

    def _wrap(self, client_sock: socket.socket) -> socket.socket:
        """The accepted socket, non-blocking and (with TLS) wrapped, its handshake not begun."""
        client_sock.setblocking(False)
        if self.ssl_context is None:
            return client_sock
        return self.ssl_context.wrap_socket(
            client_sock, server_side=True, do_handshake_on_connect=False,
            suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
        )  # fmt: skip

    def _log_refusal(self, address: str, count: int) -> None:
        log.warning(
            "refused %d connection(s) from %s: it holds %d, the most one address may "
            "(server.max_connections_per_address); raise it if this is a proxy or NAT for "
            "many clients", count, address, self.counter.count(address),
        )  # fmt: skip

    # --- the loop's phases ----------------------------------------------------------------

    def _wait(self, conn: EdgeConn, phase: Phase, seconds: float,
              buffer: bytes = b"") -> None:  # fmt: skip
        self.waiting[conn.sock.fileno()] = Waiting(
            conn, phase, time.monotonic() + seconds, bytearray(buffer)
        )

    def _watch(self, conn: EdgeConn, events: int, callback: Any) -> None:
        try:
            self.poller.modify(conn.sock, events, callback)
        except KeyError:
            self.poller.register(conn.sock, events, callback)

    def _forget(self, conn: EdgeConn) -> Waiting | None:
        entry = self.waiting.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        return entry

    def _drop(self, conn: EdgeConn) -> None:
        self._forget(conn)
        self.nr_conns -= 1
        conn.close()

    def _handshake(self, conn: EdgeConn, _sock: Any = None) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ, lambda s: self._handshake(conn))
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE, lambda s: self._handshake(conn))
            return
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", conn.address, exc)
            self._drop(conn)
            return
        self.waiting[conn.sock.fileno()].phase = Phase.HEADER
        self.waiting[conn.sock.fileno()].deadline = time.monotonic() + self.edge.header_timeout
        self._read_header(conn)

    def _read_header(self, conn: EdgeConn, _sock: Any = None) -> None:
        entry = self.waiting[conn.sock.fileno()]
        while len(entry.buffer) < MAX_HEADER_BYTES and header_end(entry.buffer) < 0:
            try:
                data = conn.sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, BlockingIOError):
                self._watch(conn, selectors.EVENT_READ, lambda s: self._read_header(conn))
                return
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE, lambda s: self._read_header(conn))
                return
            except (ssl.SSLError, OSError):
                self._drop(conn)
                return
            if not data:
                self._drop(conn)  # the client closed before sending a whole header
                return
            entry.buffer += data
        self._dispatch(conn, bytes(entry.buffer))

    def _dispatch(self, conn: EdgeConn, head: bytes) -> None:
        """A complete header: hand the connection to a thread of the pool it belongs to."""
        self._forget(conn)
        conn.sock.setblocking(True)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.initialized = conn.data_ready = True
        conn.parser.unreader.unread(head)
        conn.parser.unreader.sock = BodyDeadline(
            conn.sock, self.edge.body_timeout, self.edge.min_body_rate
        )
        pool = self.poll_pool if is_long_poll(head) else self.tpool
        future = pool.submit(self.handle, conn)
        future.add_done_callback(
            lambda done: self.method_queue.defer(self.finish_request, conn, done)
        )

    # --- gthread's hooks, routed through the loop's phases ---------------------------------

    def enqueue_req(self, conn: EdgeConn) -> None:
        """gthread calls this for a kept-alive connection whose next request is under way."""
        buffered = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        self._wait(conn, Phase.HEADER, self.edge.header_timeout, buffered)
        self._read_header(conn)

    def on_client_socket_readable(self, conn: EdgeConn, client: Any) -> None:
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.enqueue_req(conn)

    def finish_request(self, conn: EdgeConn, fs: futures.Future[Any]) -> None:
        # gthread's handle logs its own errors; a failed request closes its connection.
        if not fs.cancelled() and fs.exception() is None and fs.result():
            super().finish_request(conn, fs)
            return
        self._linger(conn)

    def _linger(self, conn: EdgeConn) -> None:
        """Half-close and drain briefly in the loop, so the last answer is not cut by a reset
        and a client that never closes cannot hold the loop (gthread lingers blocking)."""
        conn.release()
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.nr_conns -= 1
            conn.close()
            return
        self._wait(conn, Phase.LINGER, LINGER_SECONDS)
        self._drain(conn)

    def _drain(self, conn: EdgeConn, _sock: Any = None) -> None:
        entry = self.waiting[conn.sock.fileno()]
        while entry.drained < LINGER_BYTES:
            try:
                data = conn.sock.recv(READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                self._watch(conn, selectors.EVENT_READ, lambda s: self._drain(conn))
                return
            except OSError:
                break
            if not data:
                break
            entry.drained += len(data)
        self._drop(conn)

    def murder_pending(self) -> None:
        """Each loop turn: close what is past its phase's deadline (and gthread's own); the
        scan runs at most every SCAN_INTERVAL, so a busy loop does not rescan on every event."""
        super().murder_pending()
        now = time.monotonic()
        if now < getattr(self, "next_scan", 0.0):
            return
        self.next_scan = now + SCAN_INTERVAL
        expired = [entry for entry in self.waiting.values() if entry.deadline <= now]
        late: dict[Phase, int] = {}
        for entry in expired:
            late[entry.phase] = late.get(entry.phase, 0) + 1
            self._drop(entry.conn)
        for phase, count in late.items():
            if phase is not Phase.LINGER:
                log.info("closed %d connection(s) whose %s was not done within %g s",
                         count, phase.value, self._timeout_of(phase))  # fmt: skip

    def _timeout_of(self, phase: Phase) -> float:
        if phase is Phase.HANDSHAKE:
            return self.edge.handshake_timeout
        return self.edge.header_timeout

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        if force:
            for entry in list(self.waiting.values()):
                self._drop(entry.conn)


def _reset(sock: socket.socket) -> None:
    """Close with a reset: the refused client learns at once, and no TIME_WAIT stays here."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
