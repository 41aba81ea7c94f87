"""The broker's clock-driven work, in one background thread: leases, queue TTL, retention.

Every few seconds: expired leases requeue claimed jobs and mark running ones agent_lost, jobs
nobody claimed within the queue TTL expire, jobs that ended longer ago than the retention
lose their files and records, and the rows of ended console sessions are deleted (each
instance's housekeeping does it on a shared store: the delete is the same on all). Waiting
requests are woken by the store's change reports, never by this thread; it never sleeps in a
loop on behalf of a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from broker import defaults
from broker.clock import SteadyClock
from broker.errors import BrokerError
from broker.runtime import Broker
from broker.store import ExpiryReport

# Told what each round expired (``broker.metrics.Metrics.expiries``).
ExpiryListener = Callable[[ExpiryReport], None]

log = logging.getLogger(__name__)


def run_once(broker: Broker, now: float, on_expiry: ExpiryListener | None = None) -> None:
    config = broker.config
    report = broker.store.expire(now, config.queue_ttl)
    if on_expiry is not None:
        on_expiry(report)
    for job_id in report.requeued:
        log.info("%s: lease expired before the job started; queued again", job_id)
    for job_id in report.agent_lost:
        log.warning("%s: lease expired while running; agent lost", job_id)
    for job_id in report.expired:
        log.warning("%s: expired (nobody claimed or submitted it in time)", job_id)
    for job_id in report.cancelled:
        log.info("%s: cancelled after its agent stopped answering", job_id)
    for job_id in broker.store.final_jobs_before(now - config.retention):
        broker.files.remove_job(job_id)
        broker.store.delete_job(job_id)
        log.info("%s: deleted after the retention period", job_id)
    ended = broker.store.delete_ended_sessions(now, defaults.CONSOLE_SESSION_IDLE)
    if ended:
        log.info("console: %d ended sessions removed", ended)


class Housekeeper(threading.Thread):
    def __init__(self, broker: Broker, on_expiry: ExpiryListener | None = None) -> None:
        super().__init__(name="broker-housekeeping", daemon=True)
        self.broker = broker
        self.on_expiry = on_expiry
        self.stopping = threading.Event()

    def run(self) -> None:
        interval = self.broker.config.housekeeping_interval
        while not self.stopping.wait(interval):
            if isinstance(self.broker.clock, SteadyClock):
                self.broker.clock.report_step()
            try:
                run_once(self.broker, self.broker.clock(), self.on_expiry)
            except (BrokerError, OSError) as exc:
                # A busy database or a full disk must not end housekeeping for good.
                log.error("housekeeping failed, will retry in %.0f s: %s", interval, exc)

    def stop(self) -> None:
        self.stopping.set()
