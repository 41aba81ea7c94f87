"""``broker.store.timing``: each backend's transaction helper records its time by operation,
whether the transaction commits or fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import StoreError
from broker.store import Store
from broker.store.memory import MemoryStore
from broker.store.sqlite import SQLiteStore
from broker.store.timing import BUCKETS, Histogram, TransactionTimes


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(str(tmp_path / "broker.db"))


def test_each_store_call_is_one_timed_transaction(store: Store) -> None:
    store.get_job("00000000-0000-4000-8000-000000000000")
    store.list_tokens()
    store.list_tokens()
    times = store.transaction_times.snapshot()
    assert times[("get_job", "read")].count == 1
    assert times[("list_tokens", "read")].count == 2
    assert all(kind in ("read", "write") for _, kind in times)


def test_a_failed_transaction_is_timed_too() -> None:
    times = TransactionTimes()
    with pytest.raises(StoreError), times.measure("claim", "write"):
        raise StoreError("database locked")
    assert times.snapshot()[("claim", "write")].count == 1


def test_buckets_are_cumulative() -> None:
    histogram = Histogram()
    for seconds in (0.0001, 0.003, 0.003, 20.0):
        histogram.observe(seconds)
    by_bound = dict(zip(BUCKETS, histogram.buckets, strict=True))
    assert by_bound[0.0005] == 1
    assert by_bound[0.005] == 3
    assert by_bound[10.0] == 3  # 20 s lies only in +Inf, which is the count
    assert histogram.count == 4
    assert histogram.total == pytest.approx(20.0061)
