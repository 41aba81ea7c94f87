"""Dispatch and ``/health`` latency with 0 and with 1,000 hostile connections held open.

Run: ``.venv/bin/python benchmarks/broker_slowloris.py [--jobs 30] [--hostile 1000]``.

A real broker (gunicorn with the connection front of ``broker.edge_worker``, TLS, its default
deadlines of 10 s), one real agent (local scheduler) and this script as the client. Each phase
runs ``--jobs`` tiny jobs one after the other, measuring submit -> program start (the time the
site program itself recorded) and, before each job, one ``/health`` request on a new TLS
connection. The hostile phase first opens ``--hostile`` connections from 20 loopback source
addresses (85 % send nothing, 5 % a ClientHello a byte a second, 5 % finish TLS and send
nothing, 5 % a header a byte a second) and replaces each one the broker closes, so about that
many are open all along.

Before the front (plain gthread, 64 threads), 64 TLS connections that finished their handshake
and sent nothing made every ``/health`` time out (5 s, for as long as they were held); 64 TCP
connections that sent nothing delayed it by 4 s.

Prints one JSON object on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_bench import ClientApi, machine_info, make_pull_site, spread, start_agent
from dispatch_latency import SITE, STAMP_SCRIPT, commands, one_job

from tests.support.broker import BrokerProcess, start_broker
from tests.support.hostile import HostileCrowd, raise_open_files

SOURCES = [f"127.0.1.{n}" for n in range(1, 21)]
SHARES = {"idle": 0.85, "hello": 0.05, "tls-idle": 0.05, "dribble": 0.05}


def health_latency(broker: BrokerProcess) -> float:
    started = time.perf_counter()
    with requests.Session() as fresh:  # a new connection: the handshake is what is attacked
        fresh.trust_env = False
        answer = fresh.get(f"{broker.url}/api/v1/health", verify=str(broker.ca_bundle),
                           timeout=30)  # fmt: skip
    answer.raise_for_status()
    return time.perf_counter() - started


def phase(broker: BrokerProcess, api: ClientApi, jobs: int) -> dict[str, Any]:
    dispatch, health = [], []
    for _ in range(jobs):
        health.append(health_latency(broker))
        job = one_job(api)
        dispatch.append(job["program_start"] - job["submitted"])
    return {"dispatch_seconds": spread(dispatch), "health_seconds": spread(health)}


def open_crowd(broker: BrokerProcess, hostile: int) -> HostileCrowd:
    crowd = HostileCrowd(broker.port, broker.ca_bundle, refill=True)
    for kind, share in SHARES.items():
        crowd.open(kind, round(hostile * share), SOURCES)
    crowd.start()
    return crowd


def run(jobs: int, hostile: int) -> dict[str, Any]:
    raise_open_files(hostile * 2 + 1024)
    root = Path(tempfile.mkdtemp(prefix="mb-bench-slowloris-"))
    broker, agent = start_broker(root / "broker"), None
    try:
        script = root / "stamp.sh"
        script.write_text(STAMP_SCRIPT)
        script.chmod(0o755)
        site = make_pull_site(broker, root / "site", SITE, commands(script))
        agent = start_agent(site)
        api = ClientApi(broker, broker.token("client", "bench-client"))
        one_job(api)  # warm up: imports, TLS session, page cache
        quiet = phase(broker, api, jobs)
        crowd = open_crowd(broker, hostile)
        try:
            held_at_start = crowd.open_count()
            attacked = phase(broker, api, jobs)
            held_at_end = crowd.open_count()
        finally:
            crowd.close()
        return {
            "benchmark": "broker_slowloris",
            "jobs_per_phase": jobs,
            "hostile_connections": {"asked": hostile, "open_at_start": held_at_start,
                                    "open_at_end": held_at_end, "refused": crowd.refused,
                                    "closed_by_broker": len(crowd.members) - held_at_end},
            "no_hostile": quiet,
            "with_hostile": attacked,
            "setup": {"broker": "gunicorn EdgeWorker, 1 worker, TLS, default deadlines (10 s)",
                      "agent": "1 process, local scheduler", "client": "requests"},
            "machine": machine_info(),
        }  # fmt: skip
    finally:
        if agent is not None:
            agent.stop()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def summary_line(result: dict[str, Any]) -> str:
    def ms(part: str, series: str, q: str) -> str:
        return f"{result[part][series][q] * 1000:.0f}"

    return (
        f"broker_slowloris: {result['jobs_per_phase']} jobs per phase; dispatch p50/p99 "
        f"{ms('no_hostile', 'dispatch_seconds', 'p50')}/"
        f"{ms('no_hostile', 'dispatch_seconds', 'p99')} ms with 0 hostile, "
        f"{ms('with_hostile', 'dispatch_seconds', 'p50')}/"
        f"{ms('with_hostile', 'dispatch_seconds', 'p99')} ms with "
        f"{result['hostile_connections']['open_at_start']}; /health p50/p99 "
        f"{ms('no_hostile', 'health_seconds', 'p50')}/{ms('no_hostile', 'health_seconds', 'p99')}"
        f" vs {ms('with_hostile', 'health_seconds', 'p50')}/"
        f"{ms('with_hostile', 'health_seconds', 'p99')} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--hostile", type=int, default=1000)
    args = parser.parse_args()
    result = run(args.jobs, args.hostile)
    print(json.dumps(result, indent=2))
    print(summary_line(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
