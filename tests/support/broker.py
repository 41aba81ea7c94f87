"""A real broker process under gunicorn, with TLS from a throwaway CA, on a free loopback port.

``start_broker`` writes a CA and a server certificate for 127.0.0.1/localhost (the
``cryptography`` package), a ``broker.toml`` and a data dir into a private directory, starts
``python -m broker.cli serve`` and waits until ``/api/v1/health`` answers over TLS verified
against that CA. Tokens are made through the same CLI an operator uses. The process is stopped
by its PID (SIGTERM, then SIGKILL), or killed with SIGKILL on purpose and restarted on the
same port and data dir to test crash safety.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class BrokerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    path.chmod(0o600)


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """(CA bundle, server certificate, server key) for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("mint-bridge test CA"))
        .issuer_name(_name("mint-bridge test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_path, cert_path = directory / "ca.pem", directory / "server.pem"
    key_path = directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, server_key)
    return ca_path, cert_path, key_path


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
                start_new_session=True,
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
            except requests.RequestException:
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


def start_broker(root: Path, *, jobs: str = "", limits: str = "", threads: int = 64,
                 extra: str = "") -> BrokerProcess:  # fmt: skip
    """``extra`` is appended to broker.toml as it is (e.g. a ``[legacy]`` section)."""
    root.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_ca(root)
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

[storage]
data_dir = "data"

[jobs]
housekeeping_interval = "0.2s"
{jobs}

[limits]
{limits}

{extra}
""")
    process = BrokerProcess(
        root=root, port=port, config_path=config, data_dir=root / "data", ca_bundle=ca,
        log_path=root / "broker.log", access_log=root / "access.log",
    )  # fmt: skip
    process.start()
    return process


def unavailable(message: str) -> None:
    """With CI=true a broker that cannot start fails the test; elsewhere it skips it."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required service unavailable in CI: {message}")
    pytest.skip(message)
