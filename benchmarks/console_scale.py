"""What the operator views cost with 100,000 jobs in a SQLite store.

Run: ``.venv/bin/python benchmarks/console_scale.py [--jobs 100000] [--repeat 50]``.

Fills a fresh SQLite store (one transaction, the store's own insert SQL) with ``--jobs`` jobs
over 30 days and 20 sites, most of them ended (a tenth failed), the newest few hundred
waiting or running; then times, ``--repeat`` times each, the store reads the console's pages
are made of (the first page of jobs, a page 1,000 pages deep by keyset cursor, a page filtered
by site and state, a job's timeline, failures of the last 24 h, the queues), the web
console's rendered pages (overview, the first page of jobs, a page 1,000 pages deep, a page
filtered by site and state, a job's page, sites) with a logged-in operator session, and ``GET
/metrics``, all through the broker's Flask app in this process (no TLS, so the figure is the
broker's own time). Prints one JSON object on stdout and a one-line summary on stderr. The
targets: a page <= 0.2 s, ``/metrics`` <= 0.1 s at the 95th percentile.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from broker.app import create_app
from broker.auth import new_token
from broker.config import BrokerConfig
from broker.console.filters import cursor_of
from broker.store import JobQuery, NewJob, Scope, State
from broker.store import sql_jobs as q
from broker.store.sqlite import SQLiteStore

DAY = 86400.0
HTTPS = "https://localhost"


def fill(store: SQLiteStore, jobs: int, now: float) -> list[str]:
    ids = []
    with store._transaction() as tx:  # one transaction: the benchmark's set-up, not its figure
        for n in range(jobs):
            job_id = str(uuid.uuid4())
            created = now - 30 * DAY * (jobs - n) / jobs
            spec = NewJob(job_id, f"node{n % 4}", f"site-{n % 20:02d}", "fatigue", {"n": n})
            q.insert_job(tx, spec, created)
            if n < jobs - 300:
                outcome = {"state": "failed" if n % 10 == 0 else "completed",
                           "exit_code": 1 if n % 10 == 0 else 0, "signal": None, "reason": ""}
                q.finish(tx, job_id, State.FINISHED, outcome, created + 60)
                q.bump(tx, job_id, created + 60)
            else:
                q.set_state(tx, job_id, State.QUEUED, queued_at=created)
                q.bump(tx, job_id, created)
            ids.append(job_id)
    return ids


def p95(action: Callable[[], Any], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"p95_s": round(times[int(0.95 * (len(times) - 1))], 5),
            "median_s": round(statistics.median(times), 5)}


def console_client(app: Flask, token: str) -> FlaskClient:
    """A test client logged in to the console (its cookies are Secure: https only)."""
    client = app.test_client()
    form = client.get("/console/login", base_url=HTTPS).get_data(as_text=True)
    nonce = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert nonce is not None
    answer = client.post("/console/login", base_url=HTTPS,
                         data={"csrf_token": nonce.group(1), "token": token})  # fmt: skip
    assert answer.status_code == 303, answer.data[:300]
    return client


def page(client: FlaskClient, path: str) -> Callable[[], None]:
    def get() -> None:
        answer = client.get(path, base_url=HTTPS)
        assert answer.status_code == 200, (path, answer.data[:300])

    return get


def console_timings(app: Flask, token: str, ids: list[str], cursor: str, repeat: int
                    ) -> dict[str, dict[str, float]]:  # fmt: skip
    client = console_client(app, token)
    paths = {
        "page_overview": "/console/",
        "page_jobs_first": "/console/jobs",
        "page_jobs_1000_deep": f"/console/jobs?before={cursor}",
        "page_jobs_site_and_state": "/console/jobs?site=site-07&state=finished",
        "page_job": f"/console/jobs/{ids[len(ids) // 2]}",
        "page_sites": "/console/sites",
    }
    return {name: p95(page(client, path), repeat) for name, path in paths.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    now = time.time()
    with tempfile.TemporaryDirectory() as data_dir:
        config = BrokerConfig(data_dir=data_dir, tls=False, host="127.0.0.1")
        app = create_app(config, housekeeping=False)
        store = app.extensions["mint_broker"].store
        start = time.perf_counter()
        ids = fill(store, args.jobs, now)
        filled = time.perf_counter() - start
        token, record = new_token(Scope.OPERATOR, "bench", now)
        store.create_token(record)
        deep = store.page_jobs(JobQuery(), 50 * 1000)[-1]
        cursor = (deep.created_at, deep.job_id)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}

        def metrics() -> None:
            answer = client.get("/metrics", headers=headers)
            assert answer.status_code == 200, answer.data[:200]

        timings = {
            "jobs_first_page": p95(lambda: store.page_jobs(JobQuery(), 50), args.repeat),
            "jobs_page_1000_deep": p95(
                lambda: store.page_jobs(JobQuery(before=cursor), 50), args.repeat),
            "jobs_site_and_state": p95(lambda: store.page_jobs(
                JobQuery(site="site-07", state=State.FINISHED), 50), args.repeat),
            "job_timeline": p95(lambda: store.job_events(ids[len(ids) // 2]), args.repeat),
            "failures_24h": p95(lambda: store.failures_since(now - DAY), args.repeat),
            "queue_stats": p95(store.queue_stats, args.repeat),
            "metrics": p95(metrics, args.repeat),
        }
        timings.update(console_timings(app, token, ids, cursor_of(deep), args.repeat))
        store.close()
    return {"jobs": args.jobs, "fill_s": round(filled, 1), "repeat": args.repeat,
            "timings": timings}


def summary_line(result: dict[str, Any]) -> str:
    t = result["timings"]
    return (f"{result['jobs']} jobs: p95 first page {t['jobs_first_page']['p95_s']:.4f} s, "
            f"deep page {t['jobs_page_1000_deep']['p95_s']:.4f} s, site+state page "
            f"{t['jobs_site_and_state']['p95_s']:.4f} s, failures 24 h "
            f"{t['failures_24h']['p95_s']:.4f} s, /metrics {t['metrics']['p95_s']:.4f} s; "
            f"pages: overview {t['page_overview']['p95_s']:.4f} s, jobs "
            f"{t['page_jobs_first']['p95_s']:.4f} s, jobs deep "
            f"{t['page_jobs_1000_deep']['p95_s']:.4f} s, jobs site+state "
            f"{t['page_jobs_site_and_state']['p95_s']:.4f} s, job {t['page_job']['p95_s']:.4f} s, "
            f"sites {t['page_sites']['p95_s']:.4f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    result = run(parser.parse_args())
    print(json.dumps(result, indent=2))
    print(summary_line(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
