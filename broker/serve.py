"""Running the broker under gunicorn: ONE worker process with many threads, TLS by default.

Why one worker: long polls are woken in-process (``broker.notify``) and uploads to one file
are serialised by in-process locks, so every request must reach the same process. Why many
threads: each long poll (claim, status, logs, lease) holds a thread while it waits, so the
long-poll pool's size bounds how many agents and clients can wait at once (``server.threads``,
default 256); ordinary requests have a pool of their own (``server.request_threads``). The
worker is gthread with a non-blocking front (``broker.edge_worker``): TLS handshakes and
request headers are read in its event loop with deadlines, so clients that send nothing hold
no thread. To scale beyond one process, run more instances (each one worker) on one
PostgreSQL store and one shared data dir: they wake each other through LISTEN/NOTIFY
(``broker.store.postgres_notify``); never more workers.

SIGHUP (``systemctl reload``): gunicorn's reload, with broker.toml read again first, so the new
worker it starts runs with the new file (the original API's whitelist included; certificates
are read again too). A file that does not load is logged and the running config stays.
``POST /api/v1/admin/reload`` puts a new ``[legacy]`` section in force without a new worker.

The access log records method, path (never the query string), status, size and duration; it
never includes the Authorization header or any other request header. With ``[logging] format =
"json"`` (or ``serve --log-format json``) gunicorn's own lines and the access log are JSON
lines too (``JsonLogger``); the format stays the one the broker started with across reloads.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import replace
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from bridge.core.errors import BridgeError
from bridge.core.log_format import JSON, JournalFormatter, JsonFormatter, under_journal
from broker import defaults
from broker.app import create_app
from broker.config import BrokerConfig, check_tls_files, load_config
from broker.edge_worker import EdgeWorker
from broker.runtime import EXTENSION, check_store

log = logging.getLogger(__name__)

# No %(r)s or %(q)s (a query string could carry a misplaced token), no %(u)s, no headers.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)ss'


def gunicorn_settings(config: BrokerConfig) -> dict[str, Any]:
    host = f"[{config.host}]" if ":" in config.host else config.host
    settings: dict[str, Any] = {
        "bind": [f"{host}:{config.port}"],
        "workers": 1,
        "worker_class": EdgeWorker,
        "threads": config.request_threads,  # the long-poll pool is the worker's own
        # Idle connections hold no thread (the front's loop owns them), so allow plenty.
        "worker_connections": config.max_connections,
        "http_protocols": "h1",  # the front reads HTTP/1.1 headers itself
        "keepalive": defaults.KEEPALIVE,
        "graceful_timeout": defaults.GRACEFUL_TIMEOUT,
        "accesslog": config.access_log,
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "mint-bridge-broker",
        "preload_app": False,  # the app (its threads, its database) starts in the worker
        "control_socket_disable": True,  # no control socket in the operator's home
        "post_worker_init": _end_long_polls_on_stop,
    }
    if config.tls:
        settings.update({"certfile": config.cert, "keyfile": config.key})
    if config.log_format == JSON:
        settings["logger_class"] = JsonLogger
    elif under_journal():
        settings["logger_class"] = JournalLogger
    return settings


class JsonLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with every handler it sets up writing JSON lines."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in [*self.error_log.handlers, *self.access_log.handlers]:
            handler.setFormatter(JsonFormatter())


class JournalLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger writing journald lines on stderr: a priority, no timestamp of its own
    (``bridge.core.log_format``). The access log, a file, keeps its own format."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JournalFormatter("[%(process)d] [%(levelname)s] %(message)s"))


def _end_long_polls_on_stop(worker: Any) -> None:
    """Make SIGTERM/SIGINT/SIGQUIT end the worker's long polls before gunicorn's own handling.

    gunicorn stops a gthread worker by waiting for its requests to finish; a claim long poll
    would hold that up for its whole wait (up to 50 s) without this.
    """
    notifier = worker.wsgi.extensions[EXTENSION].notifier
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        previous = signal.getsignal(signum)

        def handler(number: int, frame: Any, previous: Any = previous) -> None:
            notifier.shut_down()
            if callable(previous):
                previous(number, frame)

        signal.signal(signum, handler)


class BrokerServer(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from ``BrokerConfig`` alone; command-line arguments are not read."""

    def __init__(self, config: BrokerConfig) -> None:
        self.broker_config = config
        super().__init__()

    def load_config(self) -> None:
        for name, value in gunicorn_settings(self.broker_config).items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        return create_app(self.broker_config)

    def reload(self) -> None:
        """SIGHUP: read broker.toml again before gunicorn replaces the worker."""
        source = self.broker_config.source
        if source:
            try:
                # The log handlers were set up at the start; a reload keeps their format.
                fresh = replace(load_config(source), log_format=self.broker_config.log_format)
                check_tls_files(fresh)
            except BridgeError as exc:
                # gunicorn would exit on an error here; a bad edit must not stop the broker.
                log.error("SIGHUP: %s; keeping the running config", exc)
            else:
                self.broker_config = fresh
                log.info("SIGHUP: reloaded %s", source)
        super().reload()


def serve(config: BrokerConfig) -> None:
    """Run in the foreground until SIGTERM or SIGINT."""
    check_tls_files(config)
    check_store(config)  # a schema to migrate is refused here, not in gunicorn's worker
    BrokerServer(config).run()
