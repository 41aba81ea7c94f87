"""What the console's store-backed sessions cost a request: log-in, a page view, a recorded use.

Run: ``.venv/bin/python benchmarks/console_sessions.py [--rounds 500] [--no-postgres]``.

Over a fresh SQLite file (the embedded default) and, unless ``--no-postgres``, a throwaway
PostgreSQL server (``tests.support.postgres``, as the tests start it), through the console's own
``SessionTable``: ``open`` (one per log-in: an insert and the count against the limit), ``get``
within ``TOUCH_STEP`` of the last use (every page view: one read), ``get`` that records the use
(at most once a minute per session: a read and an update) and ``close`` (log-out). Each page
view also reads the session's token (``get_token``), as before sessions were in the store.

Prints one JSON object on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from broker.console.sessions import MAX_SESSIONS, TOUCH_STEP, SessionTable  # noqa: E402
from broker.store import Scope, Store  # noqa: E402
from broker.store.locations import migrate, open_store, parse_store_url  # noqa: E402
from broker.store.sqlite import SQLiteStore  # noqa: E402

T0 = 1_000_000.0


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(store: Store, rounds: int) -> dict[str, float]:
    table = SessionTable(store, 1800.0, 12 * 3600.0)
    ids: list[str] = []
    opens = [_timed(lambda: ids.append(table.open("tok000000001", Scope.ADMIN, T0)[0]))
             for _ in range(rounds)]  # fmt: skip
    views = [_timed(lambda i=i: table.get(i, T0 + 1)) for i in ids]
    touches = [_timed(lambda i=i: table.get(i, T0 + TOUCH_STEP)) for i in ids]
    closes = [_timed(lambda i=i: table.close(i)) for i in ids]
    return {
        "open_ms": _median_ms(opens),
        "page_view_ms": _median_ms(views),
        "page_view_with_use_ms": _median_ms(touches),
        "close_ms": _median_ms(closes),
    }


def _postgres(rounds: int) -> dict[str, float]:
    from tests.support.postgres import start_postgres

    server = start_postgres()
    try:
        location = parse_store_url(server.new_database("bench"))
        migrate(location)
        store = open_store(location, pool_size=2)
        try:
            return measure(store, rounds)
        finally:
            store.close()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"rounds": args.rounds, "max_sessions": MAX_SESSIONS,
                                  "touch_step_s": TOUCH_STEP}  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        store = SQLiteStore(str(Path(root) / "broker.sqlite3"))
        try:
            results["sqlite"] = measure(store, args.rounds)
        finally:
            store.close()
    if not args.no_postgres:
        results["postgresql"] = _postgres(args.rounds)
    print(json.dumps(results, indent=2))
    parts = [f"{name}: log-in {r['open_ms']} ms, page view {r['page_view_ms']} ms, with use "
             f"{r['page_view_with_use_ms']} ms, log-out {r['close_ms']} ms"
             for name in ("sqlite", "postgresql")
             if isinstance(r := results.get(name), dict)]  # fmt: skip
    print("console sessions (median): " + "; ".join(parts), file=sys.stderr)


if __name__ == "__main__":
    main()
