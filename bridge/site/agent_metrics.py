"""The site agent's own metrics, for Prometheus: an HTTP endpoint and/or a textfile.

Set in the ``[agent]`` table: ``metrics_listen = "127.0.0.1:9464"`` serves the Prometheus text
format at ``/metrics`` (any path answers) from a thread of the agent; ``metrics_textfile``
names a ``.prom`` file in node-exporter's textfile-collector dir, rewritten atomically every
``TEXTFILE_INTERVAL`` seconds and when the agent stops.

Labels are bounded: a command label is one of the site's configured command names (anything
else the broker sent counts as ``other``), an outcome is a final job state or ``rejected``,
an error kind is an exception class name. Never a job id, a path, a token or a
program path of the site.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
    write_to_textfile,
)

from bridge import __version__
from bridge.core.job import JobState

log = logging.getLogger(__name__)

PREFIX = "mint_bridge_agent_"
TEXTFILE_INTERVAL = 15.0  # node-exporter reads the file at each scrape; 15 s is a usual scrape
# Seconds a claim's long poll waited for its job: from an agent that is never idle to one that
# waits out the broker's whole poll (50 s) many times.
CLAIM_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
OTHER_COMMAND = "other"
OUTCOMES = frozenset({*(s.value for s in JobState), "rejected"})


class AgentMetrics:
    """The agent's counters and gauges in a registry of their own (not the process-global
    one, so tests and several agents in one process never share series)."""

    def __init__(self, site: str, agent_id: str, commands: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commands = frozenset(commands)
        r = self.registry
        self.jobs = Counter(f"{PREFIX}jobs", "Jobs this agent ended, by command and outcome.",
                            ["command", "outcome"], registry=r)  # fmt: skip
        self.running = Gauge(f"{PREFIX}running_jobs", "Jobs this agent holds now.", registry=r)
        self.claim_wait = Histogram(
            f"{PREFIX}claim_wait_seconds",
            "Seconds from a claim's start to the job it returned.",
            buckets=CLAIM_BUCKETS,
            registry=r,
        )
        self.staged = Counter(
            f"{PREFIX}staged_bytes",
            "Bytes moved for jobs: inputs in from the broker, results out to it.",
            ["direction"],
            registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}broker_errors", "Failed requests to the broker, by error kind.", ["kind"],
            registry=r,
        )  # fmt: skip
        self.last_poll = Gauge(
            f"{PREFIX}last_poll_success_timestamp_seconds",
            "Unix time of the last claim the broker answered.",
            registry=r,
        )
        Info(f"{PREFIX}build", "The agent's version, site and id.", registry=r).info(
            {"version": __version__, "site": site, "agent_id": agent_id}
        )
        for direction in ("in", "out"):  # present from the start, so rate() sees the first bytes
            self.staged.labels(direction)

    def job_ended(self, command: object, outcome: dict[str, object]) -> None:
        name = command if isinstance(command, str) and command in self.commands else OTHER_COMMAND
        self.jobs.labels(name, outcome_label(outcome)).inc()

    def broker_error(self, exc: BaseException) -> None:
        self.errors.labels(type(exc).__name__).inc()

    def track_running(self, count: Callable[[], int]) -> None:
        self.running.set_function(lambda: float(count()))

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` from a daemon thread; a port in use is an error at start-up."""
        start_http_server(port, addr=host, registry=self.registry)
        log.info("agent metrics at http://%s:%d/metrics", host, port)

    def write_textfile(self, path: str) -> None:
        try:
            write_to_textfile(path, self.registry)  # a temporary file, then os.replace
        except OSError as exc:
            log.warning("agent metrics: cannot write %s: %s; check the directory exists and "
                        "is writable by the agent's user", path, exc)  # fmt: skip


def outcome_label(outcome: dict[str, object]) -> str:
    """The job's final state (``completed``: exit code 0; ``failed``, ``timeout``, ...), or
    ``rejected`` when the site refused it; anything else is ``unknown``."""
    state = outcome.get("state")
    return state if isinstance(state, str) and state in OUTCOMES else "unknown"


class TextfileWriter:
    """Rewrites the textfile every ``interval`` seconds until ``stopping`` is set, then once
    more, so the file shows the agent's last figures."""

    def __init__(self, metrics: AgentMetrics, path: str, stopping: threading.Event,
                 interval: float = TEXTFILE_INTERVAL) -> None:  # fmt: skip
        self.metrics, self.path, self.stopping, self.interval = metrics, path, stopping, interval
        self.thread = threading.Thread(target=self._loop, name="metrics-textfile", daemon=True)

    def _loop(self) -> None:
        self.metrics.write_textfile(self.path)
        while not self.stopping.wait(self.interval):
            self.metrics.write_textfile(self.path)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.thread.join(5.0)
        self.metrics.write_textfile(self.path)
