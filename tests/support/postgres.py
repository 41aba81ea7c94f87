"""A real PostgreSQL server on loopback, for the store tests and the broker's integration tests.

``start_postgres`` runs ``initdb`` (as the ``postgres`` account when run as root, which
PostgreSQL requires; trust authentication, no fsync) in a private temporary directory, starts
the server with ``pg_ctl`` on a free port with its socket in that directory, and returns a
``PostgresServer``; ``stop`` ends it by the PID in ``postmaster.pid``. Durability is switched
off (``fsync``, ``synchronous_commit``): these are throwaway databases, and speed matters.

``postgres_server`` is the session fixture over it: where PostgreSQL cannot start, a test that
needs it fails with CI=true and is skipped elsewhere (``tests.support.services``).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.services import unavailable

SUPERUSER = "postgres"
# The broker's tables, emptied between tests that share one migrated database.
TABLES = ("console_sessions, poll_slots, job_events, "
          "legacy_jobs, inputs, results, agents, tokens, jobs")


class PostgresUnavailable(RuntimeError):
    pass


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    if found is None:
        raise PostgresUnavailable("initdb not found (install the Debian package postgresql)")
    return Path(found).parent


@dataclass
class PostgresServer:
    root: Path
    port: int
    bin_dir: Path
    pid: int = 0
    options: str = ""  # the server options it was started with (a restart keeps them)
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement of ours (never data) in the ``postgres`` database."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self, prefix: str = "broker") -> str:
        """The URL of a new, empty database (no broker schema)."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def restart(self) -> None:
        """Stop the server (fast: its sessions end) and start it again on the same data."""
        self._end()
        self.pid = _pg_start(self)

    def stop(self) -> None:
        if not self.pid:
            return
        self._end()
        shutil.rmtree(self.root, ignore_errors=True)

    def _end(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)  # fast shutdown: ends sessions, no waiting
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.pid = 0


def _as_owner(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: root runs it as the postgres account.
    return ["runuser", "-u", SUPERUSER, "--", *argv] if os.geteuid() == 0 else argv


def start_postgres() -> PostgresServer:
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="mint-pg-"))
    data = root / "data"
    data.mkdir(mode=0o700)
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(SUPERUSER)
        except KeyError as exc:
            raise PostgresUnavailable("no postgres account (install postgresql)") from exc
        for path in (root, data):
            os.chown(path, account.pw_uid, account.pw_gid)
    server = PostgresServer(root, free_port(), bin_dir)
    run = {"capture_output": True, "text": True, "timeout": 120, "cwd": str(root)}
    init = subprocess.run(
        _as_owner([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER,
                   "--no-sync", "-E", "UTF8"]), **run,  # type: ignore[call-overload]
    )  # fmt: skip
    if init.returncode != 0:
        raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-2000:]}")
    server.options = (f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} -c fsync=off"
                      " -c synchronous_commit=off -c full_page_writes=off"
                      " -c max_connections=200")  # fmt: skip
    try:
        server.pid = _pg_start(server)
    except PostgresUnavailable:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def _pg_start(server: PostgresServer) -> int:
    """Start the server in ``server.root``; its postmaster's PID."""
    data, root = server.root / "data", server.root
    started = subprocess.run(
        _as_owner([str(server.bin_dir / "pg_ctl"), "-D", str(data), "-o", server.options, "-l",
                   str(root / "server.log"), "-w", "-t", "60", "start"]),
        capture_output=True, text=True, timeout=120, cwd=str(root),
    )  # fmt: skip
    pid_file = data / "postmaster.pid"
    if started.returncode != 0 or not pid_file.exists():
        log = (root / "server.log").read_text(errors="replace")[-2000:] if (
            root / "server.log").exists() else ""
        raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()} {log}")
    return int(pid_file.read_text().splitlines()[0])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[test]')")
    try:
        server = start_postgres()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"PostgreSQL could not start: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """One database migrated to this code's schema, shared by a session's tests (each test
    empties it first: ``empty``)."""
    from broker.store.locations import migrate, parse_store_url

    url = postgres_server.new_database("store")
    migrate(parse_store_url(url))
    return url


def empty(url: str) -> None:
    """Remove every row of the broker's tables, and restart the row numbers."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")  # type: ignore[arg-type]
