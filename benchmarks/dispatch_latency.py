"""Dispatch latency of the pull path: how soon a submitted job runs at the site, and ends.

Run: ``.venv/bin/python benchmarks/dispatch_latency.py [--jobs 200] [--warmup 5]``.

Everything runs on this machine: a real broker (gunicorn, TLS from a throwaway CA, started
with ``tests.support.broker.start_broker``), one real agent process (``python -m
bridge.site.agent``, local scheduler) and this script as the client, speaking the client API
with requests over one keep-alive session. ``--jobs`` tiny jobs run one after the other; the
site program is a two-line shell script that writes ``date +%s.%N`` into ``started.txt`` (a
result) as its first act.

For each job, from the moment the client's ``POST /jobs/{id}/submit`` returned (``time.time()``
here; every process reads the same clock):

- ``submit_to_running``: to the broker's own timestamp of the agent's "running" (the job
  document's ``updated_at`` of the version in which the state became ``running``). The broker
  keeps no separate running time, and ``updated_at`` moves with every later change, so the
  client long-polls the document version by version and uses the one in which the state first
  reads ``running``; ``exact`` counts the jobs where that was the very change (claimed version
  plus one), the others are an upper bound.
- ``submit_to_program_start``: to the time the site program itself recorded (the job really
  running at the site: after the agent marked it running and the local scheduler started it).
- ``submit_to_final_seen``: to the client's long poll returning the finished job.
- ``submit_to_results``: end to end, to the result file downloaded and checked against its
  SHA-256 (the ``ETag``), as a client would do before handing results on.

A breakdown comes from the same documents and the agent's log (millisecond timestamps):
submit -> agent received the claim -> marked running -> program started -> finished.

Prints one JSON object on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_bench import (
    ClientApi,
    log_events,
    machine_info,
    make_pull_site,
    other_load,
    progress,
    spread,
    start_agent,
)

from tests.support.broker import start_broker

SITE = "bench-dispatch"
TARGET_P50 = 0.1
TARGET_P99 = 0.5
FINAL = ("finished", "cancelled", "expired")
STAMP_SCRIPT = """#!/bin/sh
# The first thing the job does: the moment it runs at the site, as seconds since the epoch.
date +%s.%N > started.txt
echo started
"""
AGENT_EVENTS = {
    "claimed": r"(?P<job>[0-9a-f-]{36}): claimed \(lease epoch",
    "started": r"(?P<job>[0-9a-f-]{36}): started command stamp as ",
    "ended": r"(?P<job>[0-9a-f-]{36}): ended: ",
    "completed": r"(?P<job>[0-9a-f-]{36}): completed at the broker",
}


def commands(script: Path) -> str:
    return f"""
[commands.stamp]
description = "Record when the job started, and nothing else"
program = "{script}"
"""


def one_job(api: ClientApi) -> dict[str, Any]:
    """Create, submit and follow one job; the times of what the client saw (epoch seconds)."""
    job_id = str(uuid.uuid4())
    api.create(job_id, SITE, "stamp")
    doc = api.submit(job_id)
    submitted = time.time()
    submit_version = int(doc["version"])
    seen: list[tuple[float, int, str, float]] = []  # (seen at, version, state, updated_at)
    deadline = time.monotonic() + 120
    while doc["state"] not in FINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {doc['state']} after 120 s")
        doc = api.job(job_id, wait=30, version=int(doc["version"]))
        seen.append((time.time(), int(doc["version"]), str(doc["state"]), doc["updated_at"]))
    final_seen = time.time()
    if doc["state"] != "finished" or (doc["outcome"] or {}).get("exit_code") != 0:
        raise RuntimeError(f"job {job_id} ended {doc['state']}: {doc['outcome']}")
    stamp = api.result(job_id, "started.txt")
    results = time.time()
    api.ack(job_id)
    return {
        "job_id": job_id,
        "submitted": submitted,
        "submit_version": submit_version,
        "seen": seen,
        "final_seen": final_seen,
        "results": results,
        "program_start": float(stamp.decode().strip()),
    }


def running_time(job: dict[str, Any]) -> tuple[float | None, bool, float | None]:
    """(broker time of "running", whether it is exact, broker time of "claimed" if exact)."""
    claimed_version, claimed_at = None, None
    for _, version, state, updated_at in job["seen"]:
        if state == "claimed" and version == job["submit_version"] + 1:
            claimed_version, claimed_at = version, updated_at
        if state in ("running", "finished"):
            exact = claimed_version is not None and version == claimed_version + 1
            return (updated_at if state == "running" else None), exact, claimed_at
    return None, False, claimed_at


def analyse(jobs: list[dict[str, Any]], agent_log: Path) -> dict[str, Any]:
    events = log_events(agent_log, AGENT_EVENTS)
    series: dict[str, list[float]] = {
        k: [] for k in (
            "submit_to_running", "submit_to_running_exact_only", "submit_to_program_start",
            "submit_to_final_seen", "submit_to_results", "submit_to_agent_claim",
            "agent_claim_to_running", "running_to_program_start", "program_start_to_final_seen",
            "agent_ended_to_completed",
        )
    }  # fmt: skip
    exact = 0
    for job in jobs:
        t0 = job["submitted"]
        running, is_exact, _ = running_time(job)
        if running is not None:
            series["submit_to_running"].append(running - t0)
            if is_exact:
                exact += 1
                series["submit_to_running_exact_only"].append(running - t0)
        series["submit_to_program_start"].append(job["program_start"] - t0)
        series["submit_to_final_seen"].append(job["final_seen"] - t0)
        series["submit_to_results"].append(job["results"] - t0)
        series["program_start_to_final_seen"].append(job["final_seen"] - job["program_start"])
        agent = events.get(job["job_id"], {})
        if "claimed" in agent:
            series["submit_to_agent_claim"].append(agent["claimed"] - t0)
            if running is not None:
                series["agent_claim_to_running"].append(running - agent["claimed"])
        if running is not None:
            series["running_to_program_start"].append(job["program_start"] - running)
        if "ended" in agent and "completed" in agent:
            series["agent_ended_to_completed"].append(agent["completed"] - agent["ended"])
    figures = {name: spread(values) for name, values in series.items()}
    figures["submit_to_running"]["exact"] = exact
    return figures


def run(count: int, warmup: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mb-bench-dispatch-"))
    broker = None
    agent = None
    try:
        broker = start_broker(root / "broker")
        script = root / "stamp.sh"
        script.write_text(STAMP_SCRIPT)
        script.chmod(0o755)
        site = make_pull_site(broker, root / "site", SITE, commands(script))
        agent = start_agent(site)
        api = ClientApi(broker, broker.token("client", "bench-client"))
        machine = machine_info()
        machine["busy_other_processes_at_start"] = other_load()
        for _ in range(warmup):  # TLS sessions, imports and page cache warm up on these
            one_job(api)
        jobs = []
        started = time.monotonic()
        for index in range(count):
            jobs.append(one_job(api))
            if (index + 1) % 50 == 0:
                progress(f"{index + 1}/{count} jobs")
        elapsed = time.monotonic() - started
        api.close()
        if agent.stop() != 0:
            raise RuntimeError(f"agent exited badly: {agent.output.read_text()[-2000:]}")
        figures = analyse(jobs, site.log)
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        p50 = figures["submit_to_program_start"]["p50"]
        p99 = figures["submit_to_program_start"]["p99"]
        return {
            "benchmark": "dispatch_latency",
            "jobs": count,
            "warmup_jobs": warmup,
            "seconds_total": round(elapsed, 2),
            "jobs_per_second_sequential": round(count / elapsed, 2),
            "latency_seconds": figures,
            "targets": {"p50_seconds": TARGET_P50, "p99_seconds": TARGET_P99},
            "targets_met": {
                "running_p50": figures["submit_to_running"].get("p50", 1e9) <= TARGET_P50,
                "running_p99": figures["submit_to_running"].get("p99", 1e9) <= TARGET_P99,
                "program_start_p50": p50 <= TARGET_P50,
                "program_start_p99": p99 <= TARGET_P99,
            },
            "setup": {
                "broker": "gunicorn gthread, 1 worker, 64 threads, TLS (ECDSA P-256), SQLite WAL",
                "agent": "1 process, max_jobs 2, local scheduler",
                "client": "requests, one keep-alive session, long-poll wait 30 s",
            },
            "machine": machine,
        }
    finally:
        if agent is not None and agent.proc.poll() is None:
            agent.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def summary_line(result: dict[str, Any]) -> str:
    lat = result["latency_seconds"]

    def ms(name: str, q: str) -> str:
        value = lat[name].get(q)
        return f"{value * 1000:.0f}" if isinstance(value, float) else "?"

    return (
        f"dispatch_latency: {result['jobs']} sequential jobs; submit->running (broker) "
        f"p50 {ms('submit_to_running', 'p50')} / p99 {ms('submit_to_running', 'p99')} ms; "
        f"submit->program start p50 {ms('submit_to_program_start', 'p50')} / p95 "
        f"{ms('submit_to_program_start', 'p95')} / p99 {ms('submit_to_program_start', 'p99')} / "
        f"max {ms('submit_to_program_start', 'max')} ms; submit->results p50 "
        f"{ms('submit_to_results', 'p50')} / p99 {ms('submit_to_results', 'p99')} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="measured jobs (default 200)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured jobs first (default 5)")
    args = parser.parse_args()
    result = run(args.jobs, args.warmup)
    print(json.dumps(result, indent=2))
    print(summary_line(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
