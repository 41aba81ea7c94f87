"""How long the store's transactions take, by operation: the figures behind ``/metrics``'
``store_transaction_seconds`` histogram.

Each backend measures in its one locked helper (``SQLStore._transaction``/``_snapshot`` over
SQLite's and PostgreSQL's connections, ``MemoryStore._transaction``/``_snapshot``), from the
moment a caller asks for the transaction to its commit or rollback, so the time spent waiting
for the lock or a pooled connection is in it: that wait is what a slow store looks like from
the API. The operation is the store method's name (``claim``, ``page_jobs``), a fixed set, so
the number of series stays bounded. This module never sees a job id or any stored value.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# Seconds: an SQLite write commits in about a millisecond (synchronous=FULL), a PostgreSQL
# round trip in a few; the top buckets catch lock waits up to the 10 s busy timeout.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass
class Histogram:
    """Cumulative counts per bucket bound (``le``), with the count and sum of observations."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    count: int = 0
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.buckets[index] += 1

    def copy(self) -> Histogram:
        return Histogram(list(self.buckets), self.count, self.total)


class TransactionTimes:
    """Thread-safe histograms keyed by (operation, kind); kind is ``write`` or ``read``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], Histogram] = {}

    def observe(self, operation: str, kind: str, seconds: float) -> None:
        with self._lock:
            self._series.setdefault((operation, kind), Histogram()).observe(max(0.0, seconds))

    @contextlib.contextmanager
    def measure(self, operation: str, kind: str) -> Iterator[None]:
        """Time the block, whether it commits or raises (a failed write took time too)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(operation, kind, time.perf_counter() - start)

    def snapshot(self) -> dict[tuple[str, str], Histogram]:
        with self._lock:
            return {key: series.copy() for key, series in self._series.items()}


__all__ = ["BUCKETS", "Histogram", "TransactionTimes"]
