"""A real HAProxy on loopback in front of broker instances, for the multi-instance tests.

``start_haproxy`` writes a config into a private directory: TLS on its own free port with a
certificate from a throwaway CA (``tests.support.tls``), HTTP mode, the backends reached over
TLS verified against each one's CA, and health checks on ``/healthz`` every half second (two
failures take a server out, two successes bring it back). It runs in the foreground (``-db``)
and is stopped by its PID. ``state(name)`` reads a server's UP/DOWN from HAProxy's own stats
socket, as an operator's ``show stat`` would.

``haproxy_binary`` is the fixture that finds it: where HAProxy is missing a test that needs it
fails with CI=true and is skipped elsewhere (``tests.support.services``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.services import unavailable
from tests.support.tls import make_ca

# Health checks: every CHECK_INTERVAL, FALL failures take a server out, RISE successes back in.
CHECK_INTERVAL = "500ms"
FALL, RISE = 2, 2


class HAProxyUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Backend:
    name: str
    port: int
    ca_bundle: Path


@dataclass
class HAProxy:
    root: Path
    port: int
    ca_bundle: Path  # the CA of HAProxy's own certificate, for clients
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stats(self) -> list[dict[str, str]]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.root / "admin.sock"))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def state(self, server: str) -> str:
        """``UP``, ``DOWN`` (or a transition such as ``UP 1/2``) of one backend server."""
        for row in self.stats():
            if row["pxname"] == "brokers" and row["svname"] == server:
                return row["status"]
        raise KeyError(server)

    def wait_state(self, server: str, wanted: str, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while (now := self.state(server)) != wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy server {server} is {now!r}, not {wanted!r}")
            time.sleep(0.1)

    def log_text(self) -> str:
        return (self.root / "haproxy.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # hard stop: ends connections now
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def config_text(port: int, pem: Path, sock: Path, backends: list[Backend]) -> str:
    servers = "\n".join(
        f"    server {b.name} 127.0.0.1:{b.port} ssl verify required ca-file {b.ca_bundle}"
        f" sni str(localhost) check inter {CHECK_INTERVAL} fall {FALL} rise {RISE}"
        for b in backends
    )
    return f"""global
    stats socket {sock} mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    # Above the broker's 50 s long polls.
    timeout client 90s
    timeout server 90s
    # A connection refused by an instance that just died goes to another one.
    retries 2
    option redispatch

frontend broker
    bind 127.0.0.1:{port} ssl crt {pem}
    default_backend brokers

backend brokers
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
{servers}
"""


def start_haproxy(binary: str, root: Path, backends: list[Backend]) -> HAProxy:
    root.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_ca(root / "tls")
    pem = root / "haproxy.pem"  # HAProxy wants certificate and key in one file
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    pem.chmod(0o600)
    port = free_port()
    config = root / "haproxy.cfg"
    config.write_text(config_text(port, pem, root / "admin.sock", backends))
    check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True,
                           text=True, timeout=30, check=False)  # fmt: skip
    if check.returncode != 0:
        raise HAProxyUnavailable(f"haproxy -c refused the config: {check.stderr.strip()}")
    with open(root / "haproxy.log", "wb") as log:
        proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    proxy = HAProxy(root, port, ca, proc)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise HAProxyUnavailable(f"haproxy exited with {proc.returncode}: {proxy.log_text()}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if (root / "admin.sock").exists():
                return proxy
        if time.monotonic() > deadline:
            proxy.stop()
            raise HAProxyUnavailable("haproxy did not listen within 20 s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if found is None:
        unavailable("haproxy is not installed (the Debian package haproxy; scripts/test.sh)")
    return found
