"""What the broker benchmarks share: a pull site with its agent, the client API, RSS sampling.

Not a benchmark itself. ``dispatch_latency.py``, ``http_staging.py`` and ``broker_scale.py``
import it (each puts this directory's parent on ``sys.path`` first, so ``tests.support`` and
the packages of this repository are found when a script is run directly).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.broker import BrokerProcess  # noqa: E402

MIB = 1 << 20
MB = 1_000_000
SAMPLE_SECONDS = 0.02


# --- numbers -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Iterable[float], digits: int = 4) -> dict[str, Any]:
    """n, p50, p95, p99, max and mean of ``values`` (seconds), rounded."""
    data = list(values)
    if not data:
        return {"n": 0}
    return {
        "n": len(data),
        "p50": round(percentile(data, 50), digits),
        "p95": round(percentile(data, 95), digits),
        "p99": round(percentile(data, 99), digits),
        "max": round(max(data), digits),
        "mean": round(sum(data) / len(data), digits),
    }


def machine_info() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def other_load() -> list[dict[str, Any]]:
    """Busy processes outside this benchmark's tree: the machine may be shared (2 cores), and
    a figure taken while something else ran is marked as such in the report."""
    own = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        own |= {p.pid for p in psutil.Process().children(recursive=True)}
    procs = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if proc.pid in own:
            continue
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)  # primes the counter
            procs.append(proc)
    time.sleep(0.5)
    busy = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            share = proc.cpu_percent(None)
            if share >= 10.0:
                command = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])
                busy.append({"pid": proc.pid, "cpu_percent": share, "command": command[:120]})
    return sorted(busy, key=lambda item: -item["cpu_percent"])


# --- a pull site and its agent ------------------------------------------------------------------


@dataclass
class PullSite:
    """A site name at the broker: its work base, token file and ``site.toml`` with [agent]."""

    name: str
    root: Path
    config: Path
    work_base: Path
    log: Path


def make_pull_site(
    broker: BrokerProcess,
    root: Path,
    name: str,
    commands: str,
    *,
    agent_id: str = "bench-agent",
    max_jobs: int = 2,
    extra_site: str = "",
) -> PullSite:
    """Write the site config (``commands`` is TOML of ``[commands.*]`` tables) and a token."""
    root.mkdir(parents=True, exist_ok=True)
    work_base = root / "work"
    work_base.mkdir(mode=0o700, exist_ok=True)
    token_file = root / "agent.token"
    token_file.write_text(broker.token("site", name) + "\n")
    token_file.chmod(0o600)  # the agent refuses a token file others may read
    log = root / "site.log"
    config = root / "site.toml"
    config.write_text(
        f"""
[site]
name = "{name}"
work_base = "{work_base}"
retention = "1h"
log_file = "{log}"
{extra_site}

[agent]
url = "{broker.url}"
ca_bundle = "{broker.ca_bundle}"
token_file = "{token_file}"
agent_id = "{agent_id}"
max_jobs = {max_jobs}

{commands}
"""
    )
    return PullSite(name, root, config, work_base, log)


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    output: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        """SIGTERM (the agent hands its jobs back and exits 0), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)


def start_agent(site: PullSite, env: Mapping[str, str] | None = None) -> AgentProcess:
    output = site.root / f"agent.{time.monotonic_ns()}.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.site.agent", str(site.config)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=dict(env) if env is not None else None, cwd=str(REPO),
        )  # fmt: skip
    return AgentProcess(proc, output)


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_events(path: Path, patterns: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """``{job_id: {event: epoch seconds}}`` from a site log: for each event name, the first line
    matching its regex (which must capture the job id as ``(?P<job>...)``). The log's times are
    local wall-clock times with milliseconds, as ``logging`` writes them."""
    compiled = {event: re.compile(regex) for event, regex in patterns.items()}
    found: dict[str, dict[str, float]] = {}
    with (
        contextlib.suppress(FileNotFoundError),
        open(path, encoding="utf-8", errors="replace") as f,
    ):
        for line in f:
            stamp = _LOG_LINE.match(line)
            if stamp is None:
                continue
            for event, regex in compiled.items():
                hit = regex.search(line)
                if hit is None:
                    continue
                local = time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")
                when = time.mktime(local) + int(stamp.group(2)) / 1000.0
                found.setdefault(hit.group("job"), {}).setdefault(event, when)
    return found


# --- the client API -------------------------------------------------------------------------


class ClientApi:
    """The broker's client API with requests: one keep-alive session, the test CA, a token."""

    def __init__(self, broker: BrokerProcess, token: str) -> None:
        self.base = f"{broker.url}/api/v1"
        self.http = requests.Session()
        self.http.trust_env = False  # else $REQUESTS_CA_BUNDLE would replace the test CA
        self.http.verify = str(broker.ca_bundle)
        self.http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.http.close()

    def create(self, job_id: str, site: str, command: str, **extra: Any) -> dict[str, Any]:
        body = {"job_id": job_id, "site": site, "command": command, **extra}
        answer = self.http.post(f"{self.base}/jobs", json=body, timeout=60)
        answer.raise_for_status()
        doc: dict[str, Any] = answer.json()
        return doc

    def submit(self, job_id: str) -> dict[str, Any]:
        answer = self.http.post(f"{self.base}/jobs/{job_id}/submit", timeout=60)
        answer.raise_for_status()
        doc: dict[str, Any] = answer.json()
        return doc

    def job(self, job_id: str, wait: float = 0, version: int = 0) -> dict[str, Any]:
        params = {"wait": f"{wait:g}", "version": str(version)} if wait else None
        answer = self.http.get(f"{self.base}/jobs/{job_id}", params=params, timeout=wait + 60)
        answer.raise_for_status()
        doc: dict[str, Any] = answer.json()
        return doc

    def result(self, job_id: str, name: str) -> bytes:
        answer = self.http.get(f"{self.base}/jobs/{job_id}/results/{name}", timeout=60)
        answer.raise_for_status()
        etag = answer.headers.get("ETag", "").strip('"')
        if etag and etag != hashlib.sha256(answer.content).hexdigest():
            raise RuntimeError(f"result {name} of {job_id} does not match its ETag")
        return answer.content

    def ack(self, job_id: str) -> None:
        self.http.post(f"{self.base}/jobs/{job_id}/ack", timeout=60).raise_for_status()


# --- peak memory by sampling -------------------------------------------------------------------


@dataclass
class RssWatch:
    """Samples named processes every 20 ms: peak RSS (each sample also reads the kernel's
    high-water mark, VmHWM, so a peak between two samples still counts), and the RSS seen at
    the last sample. Roles are given as pids; a pid may be re-pointed while running."""

    roles: dict[str, int]
    peaks: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssWatch:
        self._thread = threading.Thread(target=self._loop, name="rss-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        return {role: round(peak / MIB, 1) for role, peak in self.peaks.items()}

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_SECONDS)

    def sample(self) -> None:
        self.samples += 1
        for role, pid in list(self.roles.items()):
            with contextlib.suppress(psutil.Error, OSError):
                rss = psutil.Process(pid).memory_info().rss
                self.last[role] = rss
                self.peaks[role] = max(self.peaks.get(role, 0), rss, vm_hwm(pid))


def vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def broker_worker(broker: BrokerProcess, timeout: float = 10.0) -> int:
    """The pid of the broker's one gunicorn worker (the master only supervises it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(broker.pid).children()
            if children:
                return children[0].pid
        time.sleep(0.05)
    raise RuntimeError("the broker has no worker process")


def progress(message: str) -> None:
    if os.environ.get("BENCH_VERBOSE"):
        print(message, file=sys.stderr, flush=True)
