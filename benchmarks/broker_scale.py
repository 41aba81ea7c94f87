"""One broker process under many waiting agents and a stream of tiny jobs.

Run: ``.venv/bin/python benchmarks/broker_scale.py [--agents 1000] [--jobs 10000] [--sites 20]
[--clients 4] [--paced-jobs 2000] [--store sqlite|postgresql] [--instances N]``.

``--store postgresql --instances 2`` runs two broker instances on one PostgreSQL database (a
real server in a temporary directory, ``tests.support.postgres``) sharing one ``data_dir``,
and, in the same run and before it, one SQLite instance with the same load as the baseline
(``--no-baseline`` skips it). Agents and clients are spread over the instances round robin,
each connecting to its instance directly (as with ``urls = [...]``; a load balancer would
only add its own CPU on this 2-core machine). Reported per run: jobs/s, claim p50/p99
(saturated and paced), each broker worker's RSS, and the CPU seconds of every process (each
broker worker, PostgreSQL's processes, the load generator), so scaling on more cores can be
projected.

A real broker (gunicorn gthread, one worker, TLS from a throwaway CA, started with
``tests.support.broker.start_broker``) with ``threads`` = agents + 100, so every agent's claim
can wait in a thread of its own. The agents are simulated in this process: one asyncio task
and one keep-alive TLS connection each, speaking HTTP/1.1 through a minimal client written
here (the venv has no async HTTP library; a thread per agent with requests would spend this
2-core machine's CPU on the load generator instead of the broker). Each agent, like the real
one, long-polls ``POST /agent/claim?wait=50``; for every job it gets it marks it running
(``POST .../lease`` with ``state=running``) and completes it with a tiny outcome and no
results. The agents are spread over ``--sites`` site names, one token each, so no token
reaches the broker's per-token long-poll limit (64) and each submit wakes only its site's
agents. ``--clients`` client tasks create and submit the jobs (round robin over the sites).

Two phases:

- saturated: ``--jobs`` jobs as fast as the clients can create and submit them; gives the
  throughput (jobs/s from the first submit to the last completion) and the claim latency under
  a backlog (submit -> claim includes the time in the queue).
- paced: ``--paced-jobs`` jobs at half the saturated rate (open loop, evenly spaced), so the
  claim latency shows the broker's dispatch time rather than the queue.

Checks, in this process and afterwards in the broker's own database (read after it stopped):
every job claimed exactly once (each claim bumps the job's lease epoch, so every job must end
with epoch 1) and finished once; none lost (still queued, claimed or running at the end).

Also: the broker worker's RSS (idle, with every agent waiting, peak) and thread count, the
load generator's own CPU use (if it nears 100 % of a core, it and not the broker limited the
rate), and the broker's refusals (429 per-token limit, 503 all threads busy).

Everything is on 127.0.0.1 and every loop is bounded by a deadline (``--time-limit`` per
phase). With the defaults a 2-core machine needs about 18 minutes (~14 jobs/s with 50 agents
per site); ``--jobs 2500 --paced-jobs 400`` takes about 5. Prints one JSON object on stdout and
a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import sqlite3
import ssl
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_bench import (
    MIB,
    RssWatch,
    broker_worker,
    machine_info,
    other_load,
    progress,
    spread,
)

from broker.auth import new_token
from broker.store import Scope
from broker.store.locations import migrate, open_store, parse_store_url
from tests.support.broker import BrokerProcess, start_broker
from tests.support.postgres import PostgresServer, start_postgres

CLAIM_WAIT = 50  # what a real agent asks for (the contract's ceiling)
CONNECT_AT_ONCE = 50  # TLS handshakes in flight while the agents connect
OUTCOME = {"state": "completed", "exit_code": 0, "signal": None, "reason": ""}


# --- a minimal HTTP/1.1 client over asyncio streams -----------------------------------------------


class HttpError(Exception):
    pass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive HTTPS connection; requests on it run one after the other. Enough of
    HTTP/1.1 for the broker's answers: a Content-Length body or none (1xx/204/304/HEAD), or a
    chunked one. Reconnects once if the server closed the idle connection."""

    def __init__(self, port: int, context: ssl.SSLContext, token: str) -> None:
        self.port = port
        self.context = context
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.context, server_hostname="127.0.0.1"
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 120.0,
    ) -> Answer:
        for attempt in (1, 2):
            if self.writer is None:
                await self.connect()
            try:
                return await asyncio.wait_for(self._once(method, path, body, headers), timeout)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
                self.close()
                if attempt == 2:
                    raise HttpError(f"{method} {path}: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def _once(
        self, method: str, path: str, body: Any, headers: dict[str, str] | None
    ) -> Answer:
        assert self.reader is not None and self.writer is not None
        data = b"" if body is None else json.dumps(body).encode()
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            f"Authorization: Bearer {self.token}",
            f"Content-Length: {len(data)}",
        ]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        status = int(status_line.split()[1])
        received: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            received[name.strip().lower()] = value.strip()
        if "content-length" in received:
            payload = await self.reader.readexactly(int(received["content-length"]))
        elif received.get("transfer-encoding", "").lower() == "chunked":
            payload = await self._chunked()
        else:
            payload = b""
        if received.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, received, payload)

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return b"".join(parts)


def make_tokens(store_url: str, scope: Scope, subjects: list[str]) -> dict[str, str]:
    """Tokens made the way ``broker token create`` makes them (its store, its hash), but in
    this process: a CLI process per token would take minutes for hundreds of sites."""
    store = open_store(parse_store_url(store_url), pool_size=1)
    try:
        tokens = {}
        for subject in subjects:
            text, record = new_token(scope, subject, time.time())
            store.create_token(record)
            tokens[subject] = text
        return tokens
    finally:
        store.close()


# --- the simulation -------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the agents and clients saw; times are ``time.monotonic()`` of this process."""

    submitted: dict[str, float] = field(default_factory=dict)
    claimed: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    claims: Counter[str] = field(default_factory=Counter)
    completes: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    request_seconds: dict[str, list[float]] = field(default_factory=dict)
    empty_claims: int = 0

    def timed(self, what: str, seconds: float) -> None:
        self.request_seconds.setdefault(what, []).append(seconds)


class Simulation:
    def __init__(
        self, brokers: list[BrokerProcess], workers: list[int], sites: list[str], agents: int,
        clients: int, store_url: str, postgres: PostgresServer | None,
    ) -> None:  # fmt: skip
        self.brokers = brokers
        self.workers = [psutil.Process(w) for w in workers]
        self.postgres = postgres
        self.sites = sites
        self.agent_count = agents
        self.client_count = clients
        self.contexts = [ssl.create_default_context(cafile=str(b.ca_bundle)) for b in brokers]
        self.site_tokens = make_tokens(store_url, Scope.SITE, sites)
        self.client_token = make_tokens(store_url, Scope.CLIENT, ["bench-scale"])["bench-scale"]
        self.tally = Tally()
        self.stopping = asyncio.Event()
        self.all_done = asyncio.Event()
        self.expected = 0
        self.agent_tasks: list[asyncio.Task[None]] = []
        self.connected = 0

    def connection(self, token: str, index: int) -> Connection:
        """A connection to instance ``index`` modulo the instances (round robin)."""
        k = index % len(self.brokers)
        return Connection(self.brokers[k].port, self.contexts[k], token)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of each process this run measures."""
        seen = {f"broker-{k}": _cpu(w) for k, w in enumerate(self.workers)}
        if self.postgres is not None:
            seen["postgresql"] = postgres_cpu(self.postgres)
        seen["load_generator"] = _cpu(psutil.Process())
        return seen

    # --- agents --------------------------------------------------------------------------

    async def start_agents(self) -> None:
        gate = asyncio.Semaphore(CONNECT_AT_ONCE)
        ready = [asyncio.Event() for _ in range(self.agent_count)]
        for index in range(self.agent_count):
            site = self.sites[index % len(self.sites)]
            coro = self.agent(f"sim-{index:05d}", site, gate, ready[index], index)
            self.agent_tasks.append(asyncio.create_task(coro))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 300)

    async def agent(
        self, agent_id: str, site: str, gate: asyncio.Semaphore, ready: asyncio.Event,
        index: int,
    ) -> None:  # fmt: skip
        conn = self.connection(self.site_tokens[site], index)
        async with gate:
            await conn.connect()
        self.connected += 1
        ready.set()
        tally = self.tally
        try:
            while not self.stopping.is_set():
                try:
                    answer = await conn.request(
                        "POST", f"/api/v1/agent/claim?wait={CLAIM_WAIT}", {"agent_id": agent_id},
                        timeout=CLAIM_WAIT + 60,
                    )  # fmt: skip
                except (HttpError, TimeoutError) as exc:
                    tally.refusals[f"claim failed: {type(exc).__name__}"] += 1
                    await asyncio.sleep(1)
                    continue
                now = time.monotonic()
                if answer.status == 204:
                    tally.empty_claims += 1
                    continue
                if answer.status in (429, 503):
                    tally.refusals[f"claim {answer.status}"] += 1
                    await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
                    continue
                if answer.status != 200:
                    tally.refusals[f"claim {answer.status}"] += 1
                    await asyncio.sleep(1)
                    continue
                claim = answer.json()
                job_id = claim["job"]["job_id"]
                tally.claims[job_id] += 1
                tally.claimed.setdefault(job_id, now)
                try:
                    await self.run_job(conn, job_id, int(claim["lease"]["epoch"]))
                except (HttpError, TimeoutError) as exc:  # the job stays unfinished: counted lost
                    tally.refusals[f"job request failed: {type(exc).__name__}"] += 1
        finally:
            conn.close()

    async def run_job(self, conn: Connection, job_id: str, epoch: int) -> None:
        tally = self.tally
        lease = {"Lease-Epoch": str(epoch)}
        started = time.monotonic()
        answer = await conn.request(
            "POST", f"/api/v1/agent/jobs/{job_id}/lease", {"state": "running"}, lease
        )
        tally.timed("mark_running", time.monotonic() - started)
        if answer.status != 200:
            tally.refusals[f"lease {answer.status}"] += 1
            return
        body = {"outcome": OUTCOME, "results": [], "skipped": []}
        started = time.monotonic()
        answer = await conn.request("POST", f"/api/v1/agent/jobs/{job_id}/complete", body, lease)
        now = time.monotonic()
        tally.timed("complete", now - started)
        if answer.status != 200:
            tally.refusals[f"complete {answer.status}"] += 1
            return
        tally.completes[job_id] += 1
        tally.finished.setdefault(job_id, now)
        if len(tally.finished) >= self.expected:
            self.all_done.set()

    # --- clients -------------------------------------------------------------------------

    async def client(
        self, jobs: list[tuple[str, str]], pace: float, start: float, index: int
    ) -> None:
        """Create and submit ``jobs`` (id, site); with ``pace`` > 0, job k of this client is
        submitted no earlier than ``start + k * pace``."""
        conn = self.connection(self.client_token, index)
        tally = self.tally
        try:
            for index, (job_id, site) in enumerate(jobs):
                if pace > 0:
                    delay = start + index * pace - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                t0 = time.monotonic()
                body = {"job_id": job_id, "site": site, "command": "noop"}
                answer = await conn.request("POST", "/api/v1/jobs", body)
                t1 = time.monotonic()
                if answer.status != 201:
                    raise HttpError(f"create answered {answer.status}: {answer.body[:300]!r}")
                answer = await conn.request("POST", f"/api/v1/jobs/{job_id}/submit")
                t2 = time.monotonic()
                if answer.status != 200:
                    raise HttpError(f"submit answered {answer.status}: {answer.body[:300]!r}")
                tally.submitted[job_id] = t2
                tally.timed("create", t1 - t0)
                tally.timed("submit", t2 - t1)
        finally:
            conn.close()

    async def phase(self, count: int, rate: float, limit: float) -> dict[str, Any]:
        """Submit ``count`` jobs (``rate`` jobs/s in all, 0: as fast as possible) and wait for
        every one of them to finish, or ``limit`` seconds."""
        ids = [(str(uuid.uuid4()), self.sites[k % len(self.sites)]) for k in range(count)]
        shares = [ids[k :: self.client_count] for k in range(self.client_count)]
        self.expected = len(self.tally.finished) + count
        self.all_done.clear()
        pace = self.client_count / rate if rate > 0 else 0.0
        start = time.monotonic()
        cpu_before = self.cpu_seconds()
        clients = [
            asyncio.create_task(
                self.client(share, pace, start + k * pace / self.client_count, k))
            for k, share in enumerate(shares)
        ]  # fmt: skip
        # Bounded: clients still submitting at the limit stop there; what they submitted is
        # then given a minute more to finish (anything unfinished after that counts as lost).
        _, late = await asyncio.wait(clients, timeout=limit)
        for task in late:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        submitted_by = time.monotonic()
        self.expected = len(self.tally.finished) + sum(
            1 for job, _ in ids if job in self.tally.submitted and job not in self.tally.finished
        )
        if len(self.tally.finished) < self.expected:
            self.all_done.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), max(60.0, limit - (submitted_by - start)))
        ended = time.monotonic()
        cpu_after = self.cpu_seconds()
        cpu = {name: round(cpu_after[name] - cpu_before[name], 2) for name in cpu_after}
        own_cpu = cpu["load_generator"]
        broker_cpu = sum(v for name, v in cpu.items() if name.startswith("broker-"))
        tally = self.tally
        done = [job for job, _ in ids if job in tally.finished]
        last = max((tally.finished[j] for j in done), default=ended)
        sent = sum(1 for job, _ in ids if job in tally.submitted)
        first_submit = min(
            (tally.submitted[j] for j, _ in ids if j in tally.submitted), default=start
        )
        latency = [tally.claimed[j] - tally.submitted[j] for j in done if j in tally.claimed]
        return {
            "jobs": count,
            "rate_asked": rate or "max",
            "submitted": sent,
            "finished": len(done),
            "seconds": round(last - first_submit, 2),
            "jobs_per_second": round(len(done) / max(last - first_submit, 1e-9), 1),
            "submit_seconds": round(submitted_by - start, 2),
            "submits_per_second": round(sent / max(submitted_by - start, 1e-9), 1),
            "claim_latency_seconds": spread(latency),
            "end_to_end_seconds": spread(tally.finished[j] - tally.submitted[j] for j in done),
            "broker_cpu_share": round(broker_cpu / max(ended - start, 1e-9), 2),
            "broker_cpu_ms_per_job": round(broker_cpu * 1000 / max(1, len(done)), 2),
            "load_generator_cpu_share": round(own_cpu / max(ended - start, 1e-9), 2),
            "cpu_seconds": cpu,
            "_ids": [job for job, _ in ids if job in tally.submitted],
        }

    async def stop(self) -> None:
        self.stopping.set()
        for task in self.agent_tasks:
            task.cancel()
        await asyncio.gather(*self.agent_tasks, return_exceptions=True)


# --- checks in the broker's database --------------------------------------------------------------


def database_check(store_url: str, ids: list[str]) -> dict[str, Any]:
    """Read after the brokers stopped: states of our jobs, and claims per job (lease epoch)."""
    query = "SELECT job_id, state, lease_epoch, outcome FROM jobs"
    if store_url.startswith("sqlite://"):
        conn = sqlite3.connect(f"file:{store_url.removeprefix('sqlite://')}?mode=ro", uri=True)
        try:
            rows = conn.execute(query).fetchall()
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(store_url) as pg:
            rows = [tuple(r) for r in pg.execute(query).fetchall()]
    by_id = {row[0]: row for row in rows}
    wanted = set(ids)
    states = Counter(by_id[j][1] for j in wanted if j in by_id)
    epochs = Counter(by_id[j][2] for j in wanted if j in by_id)
    outcomes = [json.loads(by_id[j][3] or "{}") for j in wanted if j in by_id]
    completed = sum(1 for outcome in outcomes if outcome.get("state") == "completed")
    return {
        "jobs_in_database": len(wanted & set(by_id)),
        "states": dict(states),
        "claims_per_job": {str(k): v for k, v in sorted(epochs.items())},
        "outcome_completed": completed,
    }


def integrity(tally: Tally, ids: list[str]) -> dict[str, int]:
    submitted = [j for j in ids if j in tally.submitted]
    return {
        "submitted": len(submitted),
        "claimed": sum(1 for j in submitted if tally.claims[j] >= 1),
        "finished": sum(1 for j in submitted if tally.completes[j] >= 1),
        "lost": sum(1 for j in submitted if tally.completes[j] == 0),
        "duplicated_claims": sum(max(0, tally.claims[j] - 1) for j in submitted),
        "duplicated_completes": sum(max(0, tally.completes[j] - 1) for j in submitted),
    }


# --- the run --------------------------------------------------------------------------------------


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def threads_of(pid: int) -> int:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).num_threads()
    return 0


def _cpu(process: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return float(times.user + times.system)
    return 0.0


def postgres_cpu(server: PostgresServer) -> float:
    """The postmaster and its live children (backends, writers): their CPU seconds so far."""
    with contextlib.suppress(psutil.Error):
        main = psutil.Process(server.pid)
        return _cpu(main) + sum(_cpu(child) for child in main.children(recursive=True))
    return 0.0


async def simulate(args: argparse.Namespace, brokers: list[BrokerProcess], workers: list[int],
                   store_url: str, postgres: PostgresServer | None) -> dict[str, Any]:  # fmt: skip
    sites = [f"scale-{k:03d}" for k in range(args.sites)]
    sim = Simulation(brokers, workers, sites, args.agents, args.clients, store_url, postgres)
    roles = {f"broker-{k}": w for k, w in enumerate(workers)}
    watch = RssWatch(roles)
    watch.sample()
    idle = sum(watch.last[r] for r in roles)

    def threads() -> int:
        return sum(threads_of(w) for w in workers)

    idle_threads = threads()
    watch.start()
    started = time.monotonic()
    try:
        await sim.start_agents()
        # Every agent sends its first claim right after connecting; give them all time to
        # reach their wait (a claim that finds nothing registers and blocks in a thread).
        deadline = time.monotonic() + 60
        while threads() < idle_threads + args.agents and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        waiting_rss, waiting_threads = sum(watch.last[r] for r in roles), threads()
        waiting_each = {r: round(watch.last[r] / MIB, 1) for r in roles}
        progress(f"{sim.connected} agents connected and waiting; broker threads {waiting_threads}")
        saturated = await sim.phase(args.jobs, 0, args.time_limit)
        progress(f"saturated: {saturated['jobs_per_second']} jobs/s")
        paced: dict[str, Any] | None = None
        if args.paced_jobs > 0:
            rate = max(1.0, saturated["jobs_per_second"] / 2)
            paced = await sim.phase(args.paced_jobs, rate, args.time_limit)
            progress(f"paced at {rate:.0f}/s: claim p99 {paced['claim_latency_seconds']}")
    finally:
        await sim.stop()
        peaks = watch.stop()
    ids = saturated.pop("_ids") + (paced.pop("_ids") if paced else [])
    per_agent = (waiting_rss - idle) / max(1, args.agents)
    return {
        "phases": {"saturated": saturated, "paced": paced},
        "integrity": integrity(sim.tally, ids),
        "request_seconds": {k: spread(v) for k, v in sim.tally.request_seconds.items()},
        "empty_claims": sim.tally.empty_claims,
        "refusals": dict(sim.tally.refusals),
        "broker_rss_mib": {
            "idle": round(idle / MIB, 1),
            "all_agents_waiting": round(waiting_rss / MIB, 1),
            "all_agents_waiting_each": waiting_each,
            "peak": round(sum(peaks.values()), 1),
            "peak_each": peaks,
            "per_waiting_agent_kib": round(per_agent / 1024, 1),
        },
        "broker_threads": {"idle": idle_threads, "all_agents_waiting": waiting_threads},
        "seconds_total": round(time.monotonic() - started, 1),
        "_ids": ids,
    }


def start_instances(root: Path, store: str, instances: int, threads: int
                    ) -> tuple[list[BrokerProcess], str, PostgresServer | None]:  # fmt: skip
    """``instances`` brokers on one store and one data dir; (brokers, store URL, PostgreSQL)."""
    postgres: PostgresServer | None = None
    shared = root / "data"
    shared.mkdir(mode=0o700)
    if store == "postgresql":
        postgres = start_postgres()
        url = postgres.new_database("bench")
        migrate(parse_store_url(url))
    else:
        url = f"sqlite://{shared / 'broker.sqlite3'}"
    brokers = []
    for k in range(instances):
        broker = start_broker(root / f"broker-{k}", threads=threads, data_dir=shared,
                              storage=f'store = "{url}"', start=False)  # fmt: skip
        # start_broker's housekeeping every 0.2 s suits tests; the broker's default is 5 s,
        # and each pass is a write transaction that scans the jobs table.
        config = broker.config_path.read_text()
        broker.config_path.write_text(config.replace('"0.2s"', '"5s"'))
        broker.start()
        brokers.append(broker)
    return brokers, url, postgres


def run(args: argparse.Namespace, store: str, instances: int) -> dict[str, Any]:
    threads = args.threads or args.agents // instances + 100
    raise_file_limit(args.agents + args.clients + 1000)  # our sockets, and the broker's
    root = Path(tempfile.mkdtemp(prefix="mb-bench-scale-"))
    brokers: list[BrokerProcess] = []
    postgres: PostgresServer | None = None
    try:
        brokers, url, postgres = start_instances(root, store, instances, threads)
        machine = machine_info()
        machine["busy_other_processes_at_start"] = other_load()
        workers = [broker_worker(b) for b in brokers]
        result = asyncio.run(simulate(args, brokers, workers, url, postgres))
        for broker in brokers:
            broker.stop()
        ids = result.pop("_ids")
        result["database"] = database_check(url, ids)
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        integ, db = result["integrity"], result["database"]
        return {
            "benchmark": "broker_scale",
            "store": store,
            "instances": instances,
            "agents": args.agents,
            "sites": args.sites,
            "agents_per_site": round(args.agents / args.sites, 1),
            "clients": args.clients,
            "limits": {
                "threads_per_instance": threads,
                "long_polls_in_all": (threads - 16) * instances,  # 16 threads kept free each
                "long_polls_per_token_per_instance": 64,
                "long_polls_per_token_used": -(-args.agents // args.sites),
                "woken_claims_per_submit": round(args.agents / args.sites, 1),
            },
            **result,
            "ok": {
                "none_lost": integ["lost"] == 0 and db["states"].get("finished") == len(ids),
                "none_duplicated": integ["duplicated_claims"] == 0
                and integ["duplicated_completes"] == 0
                and set(db["claims_per_job"]) == {"1"},
            },
            "machine": machine,
        }
    finally:
        for broker in brokers:
            broker.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def summary_line(result: dict[str, Any]) -> str:
    sat, paced = result["phases"]["saturated"], result["phases"]["paced"]
    integ, rss = result["integrity"], result["broker_rss_mib"]
    paced_text = (
        f"; paced {paced['rate_asked']:.0f}/s claim p99 {paced['claim_latency_seconds']['p99']} s"
        if paced
        else ""
    )
    return (
        f"broker_scale {result['store']} x{result['instances']}: {result['agents']} agents / "
        f"{result['sites']} sites, {sat['jobs']} jobs: "
        f"{sat['jobs_per_second']} jobs/s, claim p99 {sat['claim_latency_seconds'].get('p99')} s"
        f"{paced_text}; lost {integ['lost']}, duplicated {integ['duplicated_claims']}; broker RSS "
        f"idle {rss['idle']} / waiting {rss['all_agents_waiting']} / peak {rss['peak']} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (1000)")
    parser.add_argument("--jobs", type=int, default=10000, help="saturated-phase jobs (10000)")
    parser.add_argument("--paced-jobs", type=int, default=2000, help="paced-phase jobs (2000)")
    parser.add_argument("--sites", type=int, default=20, help="site names and tokens (20)")
    parser.add_argument("--clients", type=int, default=4, help="client tasks (4)")
    parser.add_argument("--threads", type=int, default=0, help="broker threads (agents + 100)")
    parser.add_argument("--time-limit", type=float, default=1800, help="seconds per phase (1800)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the store of the instances (sqlite)")
    parser.add_argument("--instances", type=int, default=1,
                        help="broker instances on that store (1; SQLite: 1 only)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the one-instance SQLite run done first for comparison")
    args = parser.parse_args()
    if args.agents / args.sites > 64 - 2:
        parser.error("more than 62 agents per site would hit the per-token long-poll limit")
    if args.instances < 1 or (args.store == "sqlite" and args.instances != 1):
        parser.error("--instances: SQLite serves one instance; more need --store postgresql")
    plan = [(args.store, args.instances)]
    if (args.store, args.instances) != ("sqlite", 1) and not args.no_baseline:
        plan.insert(0, ("sqlite", 1))
    results = [run(args, store, instances) for store, instances in plan]
    if len(results) == 1:
        print(json.dumps(results[0], indent=2))
    else:
        print(json.dumps({"benchmark": "broker_scale", "runs": results}, indent=2))
    for result in results:
        print(summary_line(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
