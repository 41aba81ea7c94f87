"""The cost of a claim that lists its agent's commands, when jobs of other commands wait ahead.

Run: ``.venv/bin/python benchmarks/claim_commands.py [--backlog 10000] [--rounds 200]``.

A SQLite store (``broker.store.sqlite.SQLiteStore``, the broker's default backend, in a
temporary directory) holds ``--backlog`` queued jobs of a command only an original poller runs,
all older than the jobs an agent runs. Each round queues one agent job and claims it with the
agent's list (the query passes over the whole backlog to reach it), then times a claim with
the list that finds nothing, and a claim without the list on the same store (it takes the
oldest job at once). A claim with the list must never take a backlog job: checked each round.
Prints one JSON object on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from broker.store import NewJob
from broker.store.sqlite import SQLiteStore

POLLER_ONLY = "/opt/app/bin/legacy-solver"
AGENT_COMMANDS = ["fatigue", "mesh", "mint-bridge-probe", "/opt/Abaqus/Commands/abaqus"]


def queue(store: SQLiteStore, command: str, now: float) -> str:
    job = NewJob(job_id=str(uuid.uuid4()), client="bench", site="s", command=command,
                 params={}, inputs=())  # fmt: skip
    store.create_job(job, now)
    store.submit(job.job_id, now)
    return job.job_id


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def run(backlog: int, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "broker.sqlite3"))
        for index in range(backlog):
            queue(store, POLLER_ONLY, float(index))
        listed, empty = [], []
        for index in range(rounds):
            wanted = queue(store, "fatigue", float(backlog + index))
            seconds, got = timed(lambda: store.claim("s", "agent-1", 60, 1e9,
                                                     commands=AGENT_COMMANDS))  # fmt: skip
            assert got is not None and got.job.job_id == wanted, "took a job it does not run"
            listed.append(seconds)
            seconds, got = timed(lambda: store.claim("s", "agent-1", 60, 1e9,
                                                     commands=AGENT_COMMANDS))  # fmt: skip
            assert got is None
            empty.append(seconds)
        unlisted = []
        for _ in range(min(rounds, backlog)):
            seconds, got = timed(lambda: store.claim("s", "agent-2", 60, 1e9))
            assert got is not None and got.job.spec.command == POLLER_ONLY
            unlisted.append(seconds)
        store.close()
    return {
        "backend": "sqlite",
        "backlog": backlog,
        "rounds": rounds,
        "claim_with_list_median_ms": round(statistics.median(listed) * 1000, 3),
        "claim_with_list_nothing_median_ms": round(statistics.median(empty) * 1000, 3),
        "claim_without_list_median_ms": round(statistics.median(unlisted) * 1000, 3)
        if unlisted else None,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    result = run(args.backlog, args.rounds)
    print(json.dumps(result, indent=2))
    print(
        f"claim with a command list past {args.backlog} other jobs: "
        f"{result['claim_with_list_median_ms']} ms median (nothing to take: "
        f"{result['claim_with_list_nothing_median_ms']} ms; without a list: "
        f"{result['claim_without_list_median_ms']} ms)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
