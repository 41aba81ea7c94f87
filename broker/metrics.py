"""``GET /metrics``: what the broker is doing, in Prometheus' text exposition format (0.0.4).

Two kinds of figures. Counters and the latency histogram are kept in this process by
``Metrics`` (``init_app`` hooks every request; the views call ``job_event``), so they start at
0 when the broker starts, as Prometheus expects of counters. Gauges are read at each scrape:
jobs by site and state, queues and agents from the store (grouped queries, cheap at any store
size; see ``broker.status``), long polls from the notifier, the size of the store's files.

Who may scrape: an ``admin`` token or a read-only ``operator`` token (``mint-bridge broker
token create --operator prometheus``), in the ``Authorization`` header like every other
request. Labels are route templates (``/api/v1/jobs/<job_id>``), never a path or a job id, so
the number of series stays bounded.

This module never labels a series with a token, a token id, a client's job name or a path,
and never changes the store.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.wrappers import Response as BaseResponse

from bridge import __version__
from broker import auth
from broker.cert_expiry import not_after
from broker.runtime import Broker, current
from broker.status import site_statuses
from broker.store import ExpiryReport, Scope, State, timing

EXTENSION = "mint_broker_metrics"
PREFIX = "mint_bridge_broker_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; long polls (up to 50 s) land in the top buckets, plain requests in the low ones.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_EVENTS = ("created", "claimed", "completed")
# Seconds from a job's queueing to its claim or start, and a job's whole life: from a
# sub-second dispatch by long poll to jobs that wait or run for a day.
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
               4 * 3600.0, 24 * 3600.0)  # fmt: skip
JOB_HISTOGRAMS = (
    ("dispatch_claim_seconds", "From a job's queueing to its first claim by an agent, by site."),
    ("dispatch_running_seconds", "From a job's queueing to its agent reporting it running, "
     "by site."),
    ("job_duration_seconds", "From a job's creation to its end by its agent, by site and final "
     "state."),
)
# Which file a transfer route moves, by a part of its template.
_FILE_KINDS = (("/inputs/", "input"), ("/results/", "result"), ("/logs/", "log"))
_UPLOAD_METHODS = ("PATCH", "POST", "PUT")

Labels = tuple[tuple[str, str], ...]

bp = Blueprint("metrics", __name__)
bp.before_request(
    auth.require(lambda: current().store, {Scope.ADMIN, Scope.OPERATOR}, lambda: current().clock())
)


@dataclass
class _Histogram:
    bounds: tuple[float, ...] = LATENCY_BUCKETS
    buckets: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        if not self.buckets:
            self.buckets = [0] * len(self.bounds)
        self.count += 1
        self.total += seconds
        for index, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.buckets[index] += 1


class Metrics:
    """This process's counters and histograms; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._latency: dict[Labels, _Histogram] = {}
        self._jobs: dict[str, dict[Labels, _Histogram]] = {}

    def add(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + amount

    def observe_latency(self, labels: Mapping[str, str], seconds: float) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._latency.setdefault(key, _Histogram()).observe(seconds)

    def observe_job(self, name: str, labels: Mapping[str, str], seconds: float) -> None:
        """One of ``JOB_HISTOGRAMS`` (a clock set back gives no negative figure)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._jobs.setdefault(name, {})
            series.setdefault(key, _Histogram(JOB_BUCKETS)).observe(max(0.0, seconds))

    def job_histograms(self, name: str) -> dict[Labels, _Histogram]:
        with self._lock:
            return {k: replace(v, buckets=list(v.buckets))
                    for k, v in self._jobs.get(name, {}).items()}  # fmt: skip

    def expiries(self, report: ExpiryReport) -> None:
        """Count what housekeeping's ``Store.expire`` did (called from its thread)."""
        for outcome, jobs in (("requeued", report.requeued), ("agent_lost", report.agent_lost),
                              ("cancelled", report.cancelled)):  # fmt: skip
            if jobs:
                self.add("lease_expiries", {"outcome": outcome}, len(jobs))
        if report.expired:
            self.add("jobs_expired", {}, len(report.expired))

    def counter(self, name: str) -> dict[Labels, float]:
        with self._lock:
            return dict(self._counters.get(name, {}))

    def latency(self) -> dict[Labels, _Histogram]:
        with self._lock:
            return {key: replace(h, buckets=list(h.buckets))
                    for key, h in self._latency.items()}  # fmt: skip


def init_app(app: Flask) -> Metrics:
    metrics = Metrics()
    app.extensions[EXTENSION] = metrics
    app.before_request(_start_clock)
    app.after_request(_count_request)
    app.register_blueprint(bp)
    return metrics


def of_app(app: Flask) -> Metrics:
    metrics = app.extensions[EXTENSION]
    assert isinstance(metrics, Metrics)
    return metrics


def job_event(event: str, site: str, state: State | None = None, outcome: str = "") -> None:
    """Count a job being created, claimed or completed (``state``: the job's final state,
    ``outcome``: the outcome's state, e.g. ``completed`` or ``failed``)."""
    assert event in JOB_EVENTS
    labels = {"site": site}
    if state is not None:
        labels.update({"state": state.value, "outcome": outcome})
    of_app(current_app).add(f"jobs_{event}", labels)


def job_time(name: str, labels: Mapping[str, str], seconds: float) -> None:
    """Observe one of ``JOB_HISTOGRAMS`` from a view (dispatch latency, job duration)."""
    of_app(current_app).observe_job(name, labels, seconds)


def _start_clock() -> None:
    g.metrics_started = time.perf_counter()


def _count_request(response: BaseResponse) -> BaseResponse:
    started = g.get("metrics_started")
    metrics = of_app(current_app)
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    method = request.method
    metrics.add("http_requests", {"route": route, "method": method,
                                  "status": str(response.status_code)})  # fmt: skip
    reason = g.get("auth_failure")
    if isinstance(reason, str):
        metrics.add("auth_failures", {"reason": reason})
    if isinstance(started, float):
        # Until the view answered: a streamed download's bytes go out after this.
        metrics.observe_latency({"route": route, "method": method}, time.perf_counter() - started)
    kind = next((k for part, k in _FILE_KINDS if part in route), None)
    if kind is not None and response.status_code < 300:
        if method in _UPLOAD_METHODS and request.content_length:
            metrics.add("upload_bytes", {"file": kind}, request.content_length)
        elif method == "GET" and response.content_length:
            metrics.add("download_bytes", {"file": kind}, response.content_length)
    return response


@bp.get("/metrics")
def scrape() -> Response:
    text = render(current(), of_app(current_app))
    response = Response(text, status=200, content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


# --- the exposition ------------------------------------------------------------------------


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> str:
        full = PREFIX + name + ("_total" if kind == "counter" else "")
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        return full

    def sample(self, name: str, labels: Iterable[tuple[str, str]], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(broker: Broker, metrics: Metrics) -> str:
    now = broker.clock()
    out = _Exposition()
    name = out.family("build_info", "gauge", "The broker's version (always 1).")
    out.sample(name, [("version", __version__)], 1)
    name = out.family("start_time_seconds", "gauge",
                      "When this broker process started (Unix time).")  # fmt: skip
    out.sample(name, [], broker.started_at)
    _store_gauges(out, broker, now)
    name = out.family("long_polls_in_flight", "gauge",
                      "Long polls (claims, status, logs) waiting now.")  # fmt: skip
    out.sample(name, [], broker.notifier.waiting())
    name = out.family("store_size_bytes", "gauge", "Size of the store's database files.")
    out.sample(name, [], store_size(broker.config.database))
    expires = not_after(broker.config.cert) if broker.config.tls and broker.config.cert else None
    if expires is not None:
        name = out.family("tls_cert_not_after_timestamp_seconds", "gauge",
                          "When the broker's TLS certificate ([server] cert) expires (Unix time).")
        out.sample(name, [], expires)
    _counters(out, metrics)
    _store_times(out, broker)
    return out.text()


def _store_times(out: _Exposition, broker: Broker) -> None:
    name = out.family("store_transaction_seconds", "histogram",
                      "Time of one store transaction, waiting for its lock or connection "
                      "included, by store operation and kind (write, read).")  # fmt: skip
    _histograms(out, name, {
        (("operation", operation), ("kind", kind)):
            _Histogram(timing.BUCKETS, series.buckets, series.count, series.total)
        for (operation, kind), series in broker.store.transaction_times.snapshot().items()
    })  # fmt: skip


def _store_gauges(out: _Exposition, broker: Broker, now: float) -> None:
    counts = broker.store.count_jobs()
    name = out.family("jobs", "gauge", "Jobs in the store by site and state.")
    for (site, state), count in sorted(counts.items()):
        out.sample(name, [("site", site), ("state", state.value)], count)
    sites = site_statuses(broker.store, now=now, absent_after=broker.config.agent_absent_after,
                          since=broker.started_at)  # fmt: skip
    name = out.family("queue_depth", "gauge",
                      "Jobs of the site waiting for an agent to claim them.")  # fmt: skip
    for status in sites:
        out.sample(name, [("site", status.site)], status.queued)
    name = out.family("oldest_queued_age_seconds", "gauge",
                      "How long the site's oldest queued job has waited (0: none queued).")
    for status in sites:
        out.sample(name, [("site", status.site)], status.oldest_wait(now) or 0.0)
    name = out.family("agents_online", "gauge",
                      "Agents of the site seen within [jobs] agent_absent_after.")
    for status in sites:
        out.sample(name, [("site", status.site)], status.agents_online)
    name = out.family("agent_last_seen_timestamp_seconds", "gauge",
                      "When an agent of the site was last seen (Unix time).")
    for status in sites:
        if status.last_seen is not None:
            out.sample(name, [("site", status.site)], status.last_seen)


_COUNTERS = (
    ("jobs_created", "Jobs created through the client API, by site."),
    ("jobs_claimed", "Claims answered with a job (first claims and re-attachments), by site."),
    ("jobs_completed", "Jobs ended by their agent's complete, by site, final state and outcome."),
    ("http_requests", "HTTP requests answered, by route template, method and status."),
    ("auth_failures", "Requests refused by authentication or scope, by reason (malformed, "
     "unknown, revoked, expired, missing, not_bearer, token_in_url, wrong_scope)."),
    ("lease_expiries", "Leases that lapsed, by what became of the job (requeued: it had not "
     "started; agent_lost: it was running; cancelled: a cancel was pending)."),
    ("jobs_expired", "Jobs that expired unclaimed or unsubmitted (the queue TTL)."),
    ("upload_bytes", "Bytes of uploads accepted (inputs, results, logs)."),
    ("download_bytes", "Bytes of downloads answered (inputs, results, logs)."),
)


def _counters(out: _Exposition, metrics: Metrics) -> None:
    for counter, help_text in _COUNTERS:
        name = out.family(counter, "counter", help_text)
        for labels, value in sorted(metrics.counter(counter).items()):
            out.sample(name, labels, value)
    name = out.family("http_request_duration_seconds", "histogram",
                      "Time from a request's arrival to its answer, by route template.")
    _histograms(out, name, metrics.latency())
    for histogram_name, help_text in JOB_HISTOGRAMS:
        name = out.family(histogram_name, "histogram", help_text)
        _histograms(out, name, metrics.job_histograms(histogram_name))


def _histograms(out: _Exposition, name: str, series: Mapping[Labels, _Histogram]) -> None:
    for labels, histogram in sorted(series.items()):
        counts = histogram.buckets or [0] * len(histogram.bounds)
        for bound, count in zip(histogram.bounds, counts, strict=True):
            out.sample(f"{name}_bucket", [*labels, ("le", _number(bound))], count)
        out.sample(f"{name}_bucket", [*labels, ("le", "+Inf")], histogram.count)
        out.sample(f"{name}_count", labels, histogram.count)
        out.sample(f"{name}_sum", labels, histogram.total)


def store_size(database: str) -> int:
    # SQLite keeps recent commits in the -wal file until a checkpoint: count it too.
    total = 0
    for path in (database, f"{database}-wal", f"{database}-shm"):
        try:
            total += os.stat(path).st_size
        except OSError:
            continue
    return total


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    pairs = [f'{key}="{_escape(value)}"' for key, value in labels]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))
