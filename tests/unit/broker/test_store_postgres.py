"""What only a shared database shows: several stores (as several broker processes would open)
on one PostgreSQL database, claiming from one queue at once. Every job goes to exactly one
claim (``FOR UPDATE SKIP LOCKED``), and none is lost or fails.

The contract itself is tested over every backend in ``test_store.py``; this adds the case a
single store cannot have.
"""

from __future__ import annotations

import threading
from collections import Counter

from broker.store import State, Store
from broker.store.locations import open_store, parse_store_url
from tests.support.postgres import empty
from tests.unit.broker.test_store import T0, TTL, queued

JOBS, THREADS = 60, 8


def test_claims_through_two_stores_take_every_job_exactly_once(postgres_url: str) -> None:
    empty(postgres_url)
    location = parse_store_url(postgres_url)
    stores: list[Store] = [open_store(location, pool_size=4) for _ in range(2)]
    try:
        ids = [queued(stores[0], now=T0 + n) for n in range(JOBS)]
        barrier, taken, errors = threading.Barrier(THREADS), [], []

        def claim_all(index: int) -> None:
            store = stores[index % 2]
            barrier.wait()
            try:
                while (got := store.claim("site-a", f"agent-{index}", TTL, T0 + JOBS)) is not None:
                    taken.append(got.job.job_id)
            except Exception as exc:  # reported below, with the agent that met it
                errors.append(f"agent-{index}: {exc!r}")

        threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert Counter(taken) == Counter(ids)  # each once, none lost
        assert all(stores[1].get_job(i).state is State.CLAIMED for i in ids)  # type: ignore[union-attr]
    finally:
        for store in stores:
            store.close()
