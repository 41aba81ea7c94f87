"""What the site's audit log costs: one durable (fsync'd) line per event, and ``audit verify``.

Run: ``.venv/bin/python benchmarks/audit_log.py [--lines 2000] [--dir DIR]``.

Appends ``--lines`` ``result_sent`` lines (the size a real one has) through the same writer the
site entries use, into a fresh audit dir under ``--dir`` (default: a temp dir; put it on the
site's real disk to measure its fsync), then verifies the chain. A job writes about five lines
plus one per input and result, so the per-line time says what auditing adds to a job.

Prints one JSON object on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bridge.site.audit_chain import AuditWriter  # noqa: E402
from bridge.site.audit_verify import verify  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="Parent of the audit dir (default: temp).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        writer = AuditWriter(str(Path(root) / "audit"))
        times = []
        for n in range(args.lines):
            entry = {
                "event": "result_sent", "job": "0b6f8a52-3e0c-4c37-9a38-2f4e4f6f9c11",
                "name": f"results/part-{n:05d}.dat", "size": 1 << 30, "sha256": f"{n:064x}",
                "via": "ssh", "to": "192.0.2.10:50022", "key": "SHA256:" + "A" * 43,
            }  # fmt: skip
            start = time.perf_counter()
            writer.append(entry)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        report = verify(writer.directory)
        verify_seconds = time.perf_counter() - start
    assert report.broken is None and report.lines == args.lines
    times.sort()
    result = {
        "benchmark": "audit_log",
        "host": platform.node(),
        "lines": args.lines,
        "append_ms_median": round(statistics.median(times) * 1000, 3),
        "append_ms_p99": round(times[int(len(times) * 0.99) - 1] * 1000, 3),
        "verify_lines_per_s": round(args.lines / verify_seconds),
    }
    print(json.dumps(result, indent=2))
    print(
        f"audit log: append+fsync median {result['append_ms_median']} ms "
        f"(p99 {result['append_ms_p99']} ms), verify {result['verify_lines_per_s']} lines/s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
