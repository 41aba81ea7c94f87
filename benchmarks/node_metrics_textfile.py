"""What a bridge node's metrics textfile costs a run, alone and with runs ending together.

Run: ``.venv/bin/python benchmarks/node_metrics_textfile.py [--procs 8] [--updates 50]
[--sites 20] [--dir DIR]``.

Each of ``--procs`` processes adds ``--updates`` runs (spread over ``--sites`` sites, so the file
has the size a busy node's has) to one file through ``node_metrics.record_run``: lock, read,
add, write, rename. Reports the time of one update alone and under contention (p50, p95), and
checks that every update was counted.

Prints one JSON object on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bridge.client import node_metrics  # noqa: E402


def _updates(path: str, worker: int, updates: int, sites: int) -> list[float]:
    times = []
    for n in range(updates):
        run = node_metrics.RunFigures(f"site{(worker + n) % sites}", n % 3, 1000, 2000,
                                      time.time(), 1.0)  # fmt: skip
        began = time.perf_counter()
        node_metrics.record_run(path, run)
        times.append(time.perf_counter() - began)
    return times


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--dir", default=None, help="Where the textfile goes (default: temp).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        path = str(Path(root) / "node.prom")
        alone = _updates(path, 0, args.updates, args.sites)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.procs) as pool:
            began = time.perf_counter()
            parts = pool.starmap(_updates, [(path, w, args.updates, args.sites)
                                            for w in range(args.procs)])  # fmt: skip
            wall = time.perf_counter() - began
        together = [t for part in parts for t in part]
        samples = node_metrics.read_samples(path)
        counted = sum(samples.get(f"{node_metrics.PREFIX}jobs", {}).values())
        size = Path(path).stat().st_size
    expected = args.updates * (args.procs + 1)
    report = {
        "benchmark": "node_metrics_textfile",
        "python": platform.python_version(),
        "procs": args.procs,
        "updates_per_proc": args.updates,
        "sites": args.sites,
        "file_bytes": size,
        "alone_p50_ms": round(statistics.median(alone) * 1000, 3),
        "alone_p95_ms": round(_p95(alone) * 1000, 3),
        "contended_p50_ms": round(statistics.median(together) * 1000, 3),
        "contended_p95_ms": round(_p95(together) * 1000, 3),
        "updates_per_second": round(len(together) / wall, 1),
        "counted": counted,
        "expected": expected,
        "lost_updates": expected - counted,
    }
    print(json.dumps(report))
    sys.stderr.write(
        f"textfile update: {report['alone_p50_ms']} ms alone (p95 {report['alone_p95_ms']}), "
        f"{report['contended_p50_ms']} ms with {args.procs} processes (p95 "
        f"{report['contended_p95_ms']}); {report['lost_updates']} of {expected} lost\n"
    )
    sys.exit(0 if counted == expected else 1)


if __name__ == "__main__":
    main()
