"""The pull path's test parts: a site at the broker, a real agent process, ``mint-bridge run``
processes and the client API with requests, shared by the pull-path integration tests and the
resilience suite.

Sites here open no port: each agent long-polls the broker. Each scenario that needs its own
agent uses its own site name at the broker, so no other agent can take its jobs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.broker import BrokerProcess
from tests.support.site_toml import write_site_toml

# Re-exported: the pull tests take their helpers from this module.
from tests.support.waiting import wait_until as wait_until

PROGRAMS = Path(__file__).resolve().parents[1] / "integration" / "programs"
FINAL = ("finished", "cancelled", "expired")
MiB = 1 << 20


@dataclass
class Site:
    """One site name at the broker, with its private dir (work dirs, counter) and token."""

    name: str
    root: Path
    work_base: Path
    counter: Path
    token_file: Path
    broker: BrokerProcess

    def config(self, agent_id: str, max_jobs: int = 4, url: str | None = None) -> Path:
        prog = PROGRAMS / "testprog.py"
        return write_site_toml(
            self.root / f"{agent_id}.toml",
            site={
                "name": self.name,
                "work_base": self.work_base,
                "log_file": self.root / "site.log",
            },
            agent={
                "url": url or self.broker.url,
                "ca_bundle": self.broker.ca_bundle,
                "token_file": self.token_file,
                "agent_id": agent_id,
                "max_jobs": max_jobs,
                "lease_renew": "3s",
            },
            commands={
                "checksum": {"program": prog, "args": ["checksum"]},
                "fail": {
                    "program": prog,
                    "args": ["exit", "{code}"],
                    "params": {"code": {"type": "int", "default": 3}},
                },
                "ticks": {
                    "program": prog,
                    "args": ["ticks", "{count}", "{delay}"],
                    "params": {
                        "count": {"type": "int", "default": 3},
                        "delay": {"type": "float", "default": 0.3},
                    },
                },
                "big": {
                    "program": prog,
                    "args": ["big", "{size}"],
                    "params": {"size": {"type": "int", "default": 1048576}},
                },
                "count": {
                    "program": PROGRAMS / "count_job.py",
                    "args": [self.counter, "{seconds}"],
                    "params": {"seconds": {"type": "float", "default": 0}},
                },
            },
        )

    def counted(self) -> list[tuple[str, int]]:
        """(job id, solver pid) for every run the solver recorded."""
        if not self.counter.exists():
            return []
        lines = self.counter.read_text().splitlines()
        return [(job, int(pid)) for job, pid in (line.split() for line in lines)]


def make_site(broker: BrokerProcess, root: Path, name: str) -> Site:
    root.mkdir(parents=True)
    (root / "work").mkdir()
    token_file = root / "agent.token"
    token_file.write_text(broker.token("site", name) + "\n")
    token_file.chmod(0o600)
    return Site(name, root, root / "work", root / "counter.txt", token_file, broker)


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start_agent(config: Path, env: dict[str, str] | None = None) -> Agent:
    """``env`` is added to the agent's environment."""
    log = config.with_suffix(f".{time.monotonic_ns()}.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.site.agent", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return Agent(proc, log)


def bridge_config(path: Path, url: str, ca: Path, token: Path, sites: list[str],
                  extra: str = "") -> Path:  # fmt: skip
    """A bridge.toml with a broker site for each name; ``extra`` lines go into each table
    (they replace ``poll_wait`` if they set it)."""
    text = "".join(
        f"""
[sites.{name}]
method = "broker"
url = "{url}"
ca_bundle = "{ca}"
token_file = "{token}"
{extra if "poll_wait" in extra else "poll_wait = 20" + chr(10) + extra}
"""
        for name in sites
    )
    path.write_text(text)
    return path


def mint_bridge(config: Path, *args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "bridge.cli", "run", "--config", str(config),
         *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_job(config: Path, *args: str, cwd: Path, timeout: float = 120) -> tuple[int, str, str]:
    proc = mint_bridge(config, *args, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ClientApi:
    """The client API with requests, for what a test checks at the broker directly."""

    def __init__(self, broker: BrokerProcess, token_file: Path) -> None:
        self.base = f"{broker.url}/api/v1/jobs"
        self.http = requests.Session()
        self.http.trust_env = False  # else $REQUESTS_CA_BUNDLE would replace the test CA
        self.http.verify = str(broker.ca_bundle)
        self.http.headers["Authorization"] = f"Bearer {token_file.read_text().strip()}"

    def job(self, job_id: str, wait: float = 0, version: int = 0) -> dict[str, object]:
        params = {"wait": wait, "version": version} if wait else {}
        answer = self.http.get(f"{self.base}/{job_id}", params=params, timeout=wait + 30)
        answer.raise_for_status()
        doc: dict[str, object] = answer.json()
        return doc

    def final(self, job_id: str, limit: float = 120) -> dict[str, object]:
        deadline = time.monotonic() + limit
        doc = self.job(job_id)
        while doc["state"] not in FINAL:
            assert time.monotonic() < deadline, f"job {job_id} still {doc['state']}"
            doc = self.job(job_id, wait=20, version=int(str(doc["version"])))
        return doc
