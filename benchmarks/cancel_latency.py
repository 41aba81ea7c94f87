"""How fast a `qdel` of the MInt job reaches the remote job: SIGTERM to `mint-bridge run` ->
the solver process at the site is gone, over a real loopback sshd.

Run: ``.venv/bin/python benchmarks/cancel_latency.py [--runs 5]``.

Each run starts ``mint-bridge run`` (inside a fake PBS job: PBS_JOBID set) on a long job,
waits until the solver has started at the site, sends SIGTERM the way pbs_mom does on qdel,
and measures (a) until the solver process is gone and (b) until ``mint-bridge run`` exited.
Target: remote job cancelled within 5 s of the SIGTERM.

Prints one JSON object on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.sites import write_site_config  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up waiting")
        time.sleep(0.005)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def one_run(config: Path, counter: Path, cwd: Path) -> dict[str, float]:
    before = len(counter.read_text().splitlines()) if counter.exists() else 0
    env = dict(os.environ, PBS_JOBID="1.bench", PBS_O_WORKDIR=str(cwd))
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(config), "--site", "site",
            "--command", "once", "-p", "seconds=300"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: counter.exists() and len(counter.read_text().splitlines()) > before)
    solver = int(counter.read_text().splitlines()[-1])
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: gone(solver), timeout=30)
    solver_gone = time.monotonic() - sent
    proc.wait(timeout=30)
    return {"solver_gone_s": solver_gone, "bridge_exit_s": time.monotonic() - sent,
            "exit_code": float(proc.returncode)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mint-bridge-cancel-"))
    (root / "work").mkdir()
    (root / "private").mkdir()
    write_site_config(root / "site.toml", root / "work", root / "private")
    sshd = start_sshd(root / "sshd", root / "site.toml")
    try:
        config = root / "bridge.toml"
        config.write_text(
            f'[sites.site]\nhost = "site"\nssh_config = "{sshd.ssh_config}"\n'
            f'known_hosts = "{sshd.known_hosts}"\n'
        )
        runs = [one_run(config, root / "private" / "counter.txt", root) for _ in range(args.runs)]
    finally:
        sshd.stop()
    gone_times = [r["solver_gone_s"] for r in runs]
    result = {
        "benchmark": "cancel_latency",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
        "solver_gone_s": {"median": statistics.median(gone_times), "max": max(gone_times)},
        "exit_codes": sorted({int(r["exit_code"]) for r in runs}),
        "target_s": 5.0,
    }
    print(json.dumps(result, indent=2))
    print(f"cancel: SIGTERM -> remote solver gone median {statistics.median(gone_times):.2f} s, "
          f"max {max(gone_times):.2f} s (target 5 s)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
