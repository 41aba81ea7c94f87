"""A small scripted HTTP server on loopback, for tests of the broker client code.

Real sockets, real ``requests``: each request gets the next scripted ``Reply`` (or whatever a
responder function returns for it), and every request is recorded with its headers and body.
A reply can stop after part of its body and drop the connection, as a cut network would.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bridge.core.broker_endpoint import BrokerEndpoint
from bridge.core.broker_session import BrokerSession

TOKEN = "mbt_0123456789ab_S3cretS3cretS3cretS3cret"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    cut_after: int | None = None  # send only this many body bytes, then drop the connection
    length: int | None = None  # the Content-Length to announce; default: the body's

    @classmethod
    def error(cls, status: int, code: str, message: str, **headers: str) -> Reply:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        return cls(status, body, {"Content-Type": "application/json", **headers})


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


class Scripted:
    """The replies to give, in order; or a ``responder`` that answers each request."""

    def __init__(self, responder: Callable[[Seen], Reply] | None = None) -> None:
        self.replies: list[Reply] = []
        self.seen: list[Seen] = []
        self.responder = responder
        self.lock = threading.Lock()

    def next_reply(self, seen: Seen) -> Reply:
        with self.lock:
            self.seen.append(seen)
            if self.responder is not None:
                return self.responder(seen)
            return self.replies.pop(0) if self.replies else Reply(200, b"{}")


def make_handler(script: Scripted) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = Seen(self.command, self.path, dict(self.headers.items()), body)
            reply = script.next_reply(seen)
            if reply.delay:
                time.sleep(reply.delay)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            announced = len(reply.body) if reply.length is None else reply.length
            self.send_header("Content-Length", str(announced))
            self.end_headers()
            if self.command == "HEAD":
                return
            if reply.cut_after is None:
                self.wfile.write(reply.body)
                return
            self.wfile.write(reply.body[: reply.cut_after])
            self.wfile.flush()
            self.close_connection = True  # the client sees the body end early

        do_GET = do_POST = do_PATCH = do_HEAD = _serve

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (timeout tests) or spoke TLS to us: expected here


@contextlib.contextmanager
def serving(script: Scripted, context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``script`` on a free loopback port; yields the base URL."""
    httpd = QuietServer(("127.0.0.1", 0), make_handler(script))
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    scheme = "https" if context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class SleepRecorder:
    """Stands in for ``time.sleep`` in a session: no test waits for a backoff."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def write_token(path: Path, mode: int, text: str = TOKEN + "\n") -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def session_for(url: str, tmp_path: Path, **kwargs: Any) -> tuple[BrokerSession, SleepRecorder]:
    """A session to ``url`` (plain http allowed: loopback) whose backoff sleeps are recorded."""
    token_file = write_token(tmp_path / "token", 0o600)
    sleep = SleepRecorder()
    endpoint = BrokerEndpoint(url, str(token_file), allow_http=True, where="test")
    return BrokerSession(endpoint, sleep=sleep, **kwargs), sleep
