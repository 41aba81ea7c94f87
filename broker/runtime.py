"""The broker's running parts for one app: config, store, file area, notifier, upload locks.

``create_app`` builds one ``Broker`` and keeps it in ``app.extensions``; views reach it with
``current()``. Tests build apps with their own data dir and clock. Nothing here handles HTTP.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app

from broker.byte_store import ByteStore
from broker.clock import SteadyClock
from broker.config import BrokerConfig
from broker.files import JobFiles
from broker.notify import Notifier
from broker.store import Store
from broker.store.locations import open_store
from broker.transfers import KeyedLocks

EXTENSION = "mint_broker"
# Connections a PostgreSQL store keeps at most: requests hold one only for a transaction (a
# long poll waits on the notifier, not on the database), so a few serve many threads.
POSTGRES_POOL_SIZE = 16


@dataclass
class Broker:
    config: BrokerConfig
    store: Store
    files: ByteStore
    notifier: Notifier
    uploads: KeyedLocks = field(default_factory=KeyedLocks)
    clock: Callable[[], float] = time.time
    # When this process began to serve: agents could not poll while the broker was down.
    started_at: float = 0.0

    @classmethod
    def open(cls, config: BrokerConfig, clock: Callable[[], float] | None = None) -> Broker:
        """``clock``: the broker's time (default: a ``SteadyClock``, which a step of the
        system clock does not move)."""
        clock = clock or SteadyClock()
        os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
        notifier = Notifier(config.max_long_polls, config.long_polls_per_token)
        store = open_store(config.store, notifier.changed, resync=notifier.wake_all,
                           pool_size=min(POSTGRES_POOL_SIZE, config.threads))  # fmt: skip
        return cls(config, store, JobFiles(config.data_dir), notifier, clock=clock,
                   started_at=clock())  # fmt: skip


def check_store(config: BrokerConfig) -> None:
    """Before serving: the store opens and its schema is this code's (else a clear error)."""
    if config.store_location is None:
        os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
    open_store(config.store, pool_size=1).close()


def current() -> Broker:
    broker = current_app.extensions[EXTENSION]
    assert isinstance(broker, Broker)
    return broker
