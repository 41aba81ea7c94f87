"""The bridge node's metrics, for node-exporter's textfile collector.

``mint-bridge run`` lives for one job, so it cannot serve ``/metrics``. When bridge.toml's
``[bridge] metrics_textfile`` names a ``.prom`` file, each run adds its job to the figures in
that file: under an exclusive ``flock`` on ``<file>.lock`` it reads the file, adds its counts and
writes the whole file anew through a temporary file and ``os.replace``. Runs that end together
therefore never lose each other's updates, and node-exporter never reads half a file.

Series (labels are the bridge config's site names and exit codes: bounded)::

    mint_bridge_node_jobs_total{site, exit_code}
    mint_bridge_node_staged_bytes_total{site, direction="in"|"out"}
    mint_bridge_node_last_run_timestamp_seconds{site}
    mint_bridge_node_last_run_duration_seconds{site}

Never raises into a run: a file that cannot be written is a warning, the job's exit code stands.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PREFIX = "mint_bridge_node_"
# name (as the parser gives a family), help, kind, label names
FAMILIES = {
    f"{PREFIX}jobs": ("Jobs mint-bridge run ran, by site and exit code.", "counter",
                      ("site", "exit_code")),
    f"{PREFIX}staged_bytes": ("Bytes sent to (in) and received from (out) a site's jobs.",
                              "counter", ("site", "direction")),
    f"{PREFIX}last_run_timestamp_seconds": ("Unix time the last run at a site ended.", "gauge",
                                            ("site",)),
    f"{PREFIX}last_run_duration_seconds": ("Seconds the last run at a site took.", "gauge",
                                           ("site",)),
}  # fmt: skip

Samples = dict[str, dict[tuple[str, ...], float]]


@dataclass(frozen=True)
class RunFigures:
    """What one run adds: its site, exit code, bytes each way, when it ended and how long."""

    site: str
    exit_code: int
    bytes_in: int
    bytes_out: int
    ended: float
    seconds: float


def record_run(path: str, run: RunFigures) -> None:
    """Add ``run`` to the textfile at ``path``; a failure is logged, never raised."""
    try:
        with _locked(f"{path}.lock"):
            samples = read_samples(path)
            add_run(samples, run)
            write_to_textfile(path, _registry(samples))  # a temporary file, then os.replace
    except OSError as exc:
        log.warning("metrics textfile %s not updated: %s; check that its directory exists and "
                    "is writable ([bridge] metrics_textfile of bridge.toml)", path, exc)


def add_run(samples: Samples, run: RunFigures) -> None:
    def bump(name: str, labels: tuple[str, ...], by: float) -> None:
        series = samples.setdefault(PREFIX + name, {})
        series[labels] = series.get(labels, 0.0) + by

    bump("jobs", (run.site, str(run.exit_code)), 1)
    bump("staged_bytes", (run.site, "in"), run.bytes_in)
    bump("staged_bytes", (run.site, "out"), run.bytes_out)
    samples.setdefault(f"{PREFIX}last_run_timestamp_seconds", {})[(run.site,)] = run.ended
    samples.setdefault(f"{PREFIX}last_run_duration_seconds", {})[(run.site,)] = run.seconds


def read_samples(path: str) -> Samples:
    """The figures in the file so far; a missing file is none yet. Series we do not know (a
    hand edit, an older version) are dropped rather than guessed at."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    samples: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            spec = FAMILIES.get(family.name)
            if spec is None:
                continue
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = tuple(sample.labels.get(label, "") for label in spec[2])
                samples.setdefault(family.name, {})[key] = float(sample.value)
    except ValueError as exc:
        # A damaged file must not stop the counting for good: start again, and say so.
        log.warning("metrics textfile %s is not Prometheus text (%s); its counts start anew",
                    path, exc)  # fmt: skip
        return {}
    return samples


class _Figures(Collector):
    def __init__(self, samples: Samples) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Metric]:
        for name, (doc, kind, labels) in FAMILIES.items():
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, doc, labels=list(labels))
            else:
                family = GaugeMetricFamily(name, doc, labels=list(labels))
            for key, value in sorted(self.samples.get(name, {}).items()):
                family.add_metric(list(key), value)
            yield family


def _registry(samples: Samples) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(samples))
    return registry


class _locked:
    """An exclusive ``flock`` on a lock file beside the textfile (never on the textfile itself:
    it is replaced by each write, so a lock on it would guard a file nobody reads again)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the lock
