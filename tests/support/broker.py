"""A real broker process under gunicorn, with TLS from a throwaway CA, on a free loopback port.

``start_broker`` writes a CA and a server certificate for 127.0.0.1/localhost
(``tests.support.tls``), a ``broker.toml`` and a data dir into a private directory, starts
``python -m broker.cli serve`` and waits until ``/api/v1/health`` answers over TLS verified
against that CA. Tokens are made through the same CLI an operator uses. The process is stopped
by its PID (SIGTERM, then SIGKILL), or killed with SIGKILL on purpose and restarted on the
same port and data dir to test crash safety.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
import requests

from tests.support.net import free_port
from tests.support.services import unavailable
from tests.support.tls import make_ca

# make_ca and unavailable are re-exported: the broker tests import them from here.
__all__ = [
    "BrokerFactory", "BrokerProcess", "BrokerUnavailable", "make_ca", "start_broker",
    "unavailable",
]  # fmt: skip


class BrokerUnavailable(RuntimeError):
    pass


@dataclass
class BrokerProcess:
    root: Path
    port: int
    config_path: Path
    data_dir: Path
    ca_bundle: Path
    log_path: Path
    access_log: Path
    proc: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "broker.cli", "serve", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **self.env},
            )  # fmt: skip
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise BrokerUnavailable(f"broker exited with {code}: {self.log_tail()}")
            try:
                answer = requests.get(f"{self.url}/api/v1/health", verify=str(self.ca_bundle),
                                      timeout=2)  # fmt: skip
                if answer.status_code == 200:
                    return
            # A restart right after kill -9 can meet a socket closed mid-handshake: urllib3
            # lets that ssl.SSLError (an OSError) through unwrapped. Not ready yet; try again.
            except (requests.RequestException, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise BrokerUnavailable(f"broker did not answer within {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _processes(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.Error:
            return []

    def stop(self) -> None:
        if self.proc is None:
            return
        processes = self._processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        self._kill(processes)

    def kill9(self) -> None:
        """SIGKILL the master and its worker at once, as a crash or an OOM kill would."""
        self._kill(self._processes())

    def _kill(self, processes: list[psutil.Process]) -> None:
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(processes, timeout=10)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.start()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "broker.cli", *args, "--config", str(self.config_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def token(self, scope: str, name: str | None = None) -> str:
        """A token made by ``broker token create`` (cached per scope and name)."""
        key = f"{scope}:{name}"
        if key not in self.tokens:
            args = ["--admin"] if scope == "admin" else [f"--{scope}", str(name)]
            done = self.cli("token", "create", *args)
            if done.returncode != 0:
                raise BrokerUnavailable(f"token create failed: {done.stderr}")
            self.tokens[key] = done.stdout.strip()
        return self.tokens[key]


class BrokerFactory(Protocol):
    """The ``broker_factory`` fixture: ``name`` names the broker's temp dir, ``settings`` go to
    ``start_broker``; the brokers it starts are stopped when its scope ends."""

    def __call__(self, name: str = "broker", **settings: Any) -> BrokerProcess: ...


def start_broker(root: Path, *, jobs: str = "", limits: str = "", threads: int = 64,
                 extra: str = "", storage: str = "", server: str = "",
                 data_dir: Path | None = None, start: bool = True,
                 env: dict[str, str] | None = None) -> BrokerProcess:  # fmt: skip
    """``extra`` is appended to broker.toml as it is (e.g. a ``[legacy]`` section), ``storage``
    to its ``[storage]`` section (e.g. a ``store`` URL), ``server`` to ``[server]``;
    ``data_dir`` may be one that several brokers share (default: ``data`` in ``root``);
    ``start=False`` only writes it all; ``env`` is added to the server's environment."""
    root.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_ca(root, not_before_days=-1 / 24, not_after_days=1)
    port = free_port()
    config = root / "broker.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}
cert = "{cert.name}"
key = "{key.name}"
threads = {threads}
access_log = "access.log"
{server}

[storage]
data_dir = "{data_dir or 'data'}"
{storage}

[jobs]
housekeeping_interval = "0.2s"
{jobs}

[limits]
{limits}

{extra}
""")
    process = BrokerProcess(
        root=root, port=port, config_path=config, data_dir=data_dir or root / "data", ca_bundle=ca,
        log_path=root / "broker.log", access_log=root / "access.log", env=env or {},
    )  # fmt: skip
    if start:
        process.start()
    return process
