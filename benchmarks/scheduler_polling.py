"""Cost of following many Slurm jobs: scheduler commands and time per status pass.

Run (as root): ``.venv/bin/python benchmarks/scheduler_polling.py [--jobs 500] [--passes 10]``.

Starts a private single-node Slurm with ``tests.support.slurm.start_slurm``, submits
``--jobs`` jobs through ``SlurmScheduler.submit`` with ``--hold`` so they stay queued, then
asks ``SlurmScheduler.status()`` about all of them once per ``--interval`` for ``--passes``
passes, counting every Slurm command the adapter runs (by wrapping ``run``). Then it cancels
them all and measures the same for jobs that have ended (their status comes from the jobcomp
file, ``sacct -c``). Everything is cancelled and stopped at the end.

Prints one JSON object on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from schedulers.base import JobHandle, JobSpec, Resources, SchedulerOptions  # noqa: E402
from schedulers.slurm import SlurmScheduler  # noqa: E402
from tests.support.slurm import SlurmCluster, start_slurm  # noqa: E402


class CountingSlurm(SlurmScheduler):
    """The real adapter, with a record of every command it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[str] = []

    def run(self, argv: list[str], what: str, *args: Any, **kwargs: Any) -> str:
        self.commands.append(" ".join(argv[:2]) if argv[:2] == ["sacct", "-c"] else argv[0])
        return super().run(argv, what, *args, **kwargs)


def submit_held(slurm: CountingSlurm, root: Path, count: int) -> list[JobHandle]:
    handles = []
    for _ in range(count):
        job_id = str(uuid.uuid4())
        workdir = root / job_id
        control = workdir / ".mint-bridge"
        control.mkdir(parents=True)
        spec = JobSpec(
            job_id=job_id,
            workdir=str(workdir),
            control_dir=str(control),
            argv=["/bin/true"],
            env={"PATH": "/usr/bin:/bin"},
            stdout_path=str(control / "stdout"),
            stderr_path=str(control / "stderr"),
            resources=Resources(extra=("--hold",)),  # stays queued until released
        )
        handles.append(JobHandle(job_id, slurm.submit(spec), str(control)))
    return handles


def measure(
    slurm: CountingSlurm, handles: Sequence[JobHandle], passes: int, interval: float
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for index in range(passes):
        started = time.monotonic()
        before = len(slurm.commands)
        outcomes = slurm.status(handles)
        seconds = time.monotonic() - started
        commands = slurm.commands[before:]
        rows.append(
            {
                "commands": len(commands),
                "programs": dict(Counter(commands)),
                "seconds": round(seconds, 4),
                "states": dict(Counter(o.state.value for o in outcomes.values())),
            }
        )
        if index < passes - 1:
            time.sleep(max(0.0, interval - seconds))
    times = sorted(row["seconds"] for row in rows)
    return {
        "passes": rows,
        "commands_per_pass_max": max(row["commands"] for row in rows),
        "commands_per_pass_after_first": max((row["commands"] for row in rows[1:]), default=0),
        "seconds_per_pass_median": round(statistics.median(times), 4),
        "seconds_per_pass_max": times[-1],
    }


def run_benchmark(cluster: SlurmCluster, jobs: int, passes: int, interval: float) -> dict[str, Any]:
    os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]  # the adapter's commands inherit it
    slurm = CountingSlurm()
    slurm.configure(SchedulerOptions(poll_interval=interval, retry_wait=0.2))
    with tempfile.TemporaryDirectory(prefix="mb-bench-work-") as work:
        started = time.monotonic()
        handles = submit_held(slurm, Path(work), jobs)
        submit_seconds = time.monotonic() - started
        try:
            queued = measure(slurm, handles, passes, interval)
        finally:
            ids = [h.native_id for h in handles]
            for start in range(0, len(ids), 200):
                cluster.run("scancel", *ids[start : start + 200], timeout=60)
        deadline = time.monotonic() + 60  # until every cancel is in the jobcomp file
        while time.monotonic() < deadline:
            done = cluster.run("sacct", "-c", "-n", "-P", "--format=JobID").stdout.split()
            if set(ids) <= set(done):
                break
            time.sleep(0.5)
        ended = measure(slurm, handles, max(2, passes // 3), interval)
    version = subprocess.run(
        ["sbatch", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "benchmark": "scheduler_polling",
        "slurm": version,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "jobs": jobs,
        "interval_seconds": interval,
        "submit_seconds_total": round(submit_seconds, 2),
        "submit_seconds_per_job": round(submit_seconds / max(1, jobs), 4),
        "queued": queued,
        "ended": ended,
    }


def summary_line(result: dict[str, Any]) -> str:
    queued, ended = result["queued"], result["ended"]
    return (
        f"scheduler_polling: {result['jobs']} queued Slurm jobs: "
        f"{queued['commands_per_pass_max']} command(s) per status pass, "
        f"{queued['seconds_per_pass_median'] * 1000:.0f} ms median; "
        f"ended jobs: {ended['commands_per_pass_after_first']} command(s) per pass after the "
        f"first ({ended['passes'][0]['commands']}), "
        f"{ended['seconds_per_pass_median'] * 1000:.0f} ms median; "
        f"submit {result['submit_seconds_per_job'] * 1000:.0f} ms per job"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="queued jobs (default 500)")
    parser.add_argument("--passes", type=int, default=10, help="status passes (default 10)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-bench-slurm-") as tmp:
        cluster = start_slurm(Path(tmp))
        try:
            result = run_benchmark(cluster, args.jobs, args.passes, args.interval)
        finally:
            cluster.stop()
    print(json.dumps(result, indent=2))
    print(summary_line(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
