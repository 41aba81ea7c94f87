"""The broker's config file (``broker.toml``), read into one typed, checked object.

Errors name the file and the key (``broker.toml: server.port: must be an int, not str``).
Relative paths are taken relative to the config file's directory, so a config and its
certificate can move together. ``[storage] store`` names the store by URL
(``broker.store.locations``); without it, SQLite in the data dir. Plain HTTP is accepted only
on a loopback address, behind a TLS reverse proxy on the same machine: this module never lets
the broker listen unencrypted on a network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from bridge.core.broker_endpoint import is_loopback
from bridge.core.errors import ConfigError
from bridge.core.log_format import LOG_FORMATS, TEXT
from bridge.core.tomlconf import Section, load_toml
from bridge.core.units import parse_duration, parse_size
from broker import defaults
from broker.legacy.config import LegacyConfig, parse_legacy
from broker.store.locations import POSTGRESQL, StoreLocation, parse_store_url, sqlite_at

_SECTIONS = {"server", "storage", "jobs", "limits", "legacy", "logging"}


@dataclass(frozen=True)
class BrokerConfig:
    data_dir: str
    host: str = "0.0.0.0"  # noqa: S104 - a broker serves sites on other machines
    port: int = defaults.PORT
    tls: bool = True
    cert: str | None = None
    key: str | None = None
    threads: int = defaults.THREADS  # the long-poll pool
    request_threads: int = defaults.REQUEST_THREADS  # the pool of ordinary requests
    handshake_timeout: float = defaults.HANDSHAKE_TIMEOUT
    header_timeout: float = defaults.HEADER_TIMEOUT
    max_connections: int = defaults.MAX_CONNECTIONS
    max_connections_per_address: int = defaults.MAX_CONNECTIONS_PER_ADDRESS
    access_log: str | None = "-"
    lease_ttl: float = defaults.LEASE_TTL
    queue_ttl: float = defaults.QUEUE_TTL
    agent_absent_after: float = defaults.AGENT_ABSENT_AFTER
    retention: float = defaults.RETENTION
    housekeeping_interval: float = defaults.HOUSEKEEPING_INTERVAL
    max_input_size: int | None = None  # None: no limit (the old API's base64 cap is gone)
    max_result_size: int | None = None
    max_log_size: int | None = None
    max_json_size: int = defaults.MAX_JSON_BYTES
    long_polls_per_token: int = defaults.LONG_POLLS_PER_TOKEN
    body_timeout: float = defaults.BODY_TIMEOUT
    min_body_rate: int = defaults.MIN_BODY_RATE
    # The original API (/mi-distcomp-api/) and its whitelist; off unless [legacy] enables it.
    legacy: LegacyConfig = field(default_factory=LegacyConfig)
    # [storage] store; None: the embedded default, SQLite at ``database``.
    store_location: StoreLocation | None = None
    log_format: str = TEXT  # [logging] format: "text" or "json" (bridge.core.log_format)
    source: str = ""

    @property
    def database(self) -> str:
        return os.path.join(self.data_dir, "broker.sqlite3")

    @property
    def store(self) -> StoreLocation:
        return self.store_location or sqlite_at(self.database)

    @property
    def max_long_polls(self) -> int:
        return max(1, self.threads - defaults.RESERVED_THREADS)


def load_config(path: str) -> BrokerConfig:
    data = load_toml(path)
    top = Section(path, "", data)
    top.check_keys(_SECTIONS)
    base = os.path.dirname(os.path.abspath(path))
    server, storage = top.section("server"), top.section("storage")
    jobs, limits = top.section("jobs"), top.section("limits")
    config = BrokerConfig(
        data_dir=_path(storage, "data_dir", base, required=True) or "",
        store_location=_store(storage, base),
        source=os.path.abspath(path),
        **_server(server, base),
        **_jobs(jobs),
        **_limits(limits),
        legacy=parse_legacy(top.section("legacy")),
        log_format=_log_format(top.section("logging")),
    )
    _check_tls(config, server)
    return config


def _path(section: Section, key: str, base: str, *, required: bool = False) -> str | None:
    if key not in section.data:
        if required:
            raise section.error("is required", key)
        return None
    value = section.path_value(key, "")
    if not value:
        raise section.error("must not be empty", key)
    return os.path.join(base, value)  # an absolute value stays as it is


def _store(sec: Section, base: str) -> StoreLocation | None:
    # Checked here, as every other table is: a typo such as `stroe` would otherwise leave the
    # broker on SQLite in data_dir without a word.
    sec.check_keys({"data_dir", "store", "password_file"})
    password_file = _path(sec, "password_file", base)
    location = None
    if "store" in sec.data:
        try:
            location = parse_store_url(sec.get("store", str, ""), password_file)
        except ValueError as exc:
            # The message never quotes the value: it may hold a password.
            raise sec.error(str(exc), "store") from exc
    if password_file is not None and (location is None or location.kind != POSTGRESQL):
        raise sec.error("is only for a postgresql:// store", "password_file")
    return location


_SERVER_KEYS = {
    "host", "port", "tls", "cert", "key", "threads", "access_log", "request_threads",
    "handshake_timeout", "header_timeout", "max_connections", "max_connections_per_address",
}  # fmt: skip


def _int_between(sec: Section, key: str, default: int, low: int, high: int) -> int:
    value = sec.get(key, int, default)
    if not low <= value <= high:
        raise sec.error(f"must be between {low} and {high}, not {value}", key)
    return value


def _timeout(sec: Section, key: str, default: float) -> float:
    value = sec.convert(key, parse_duration, default)
    if not 0 < value <= 3600:
        raise sec.error(f'must be longer than 0 s and at most 1 h (e.g. "{default:g}s")', key)
    return value


def _server(sec: Section, base: str) -> dict[str, Any]:
    sec.check_keys(_SERVER_KEYS)
    threads = _int_between(sec, "threads", defaults.THREADS, defaults.RESERVED_THREADS + 1, 4096)
    access_log = sec.get("access_log", str, "-")
    return {
        "host": sec.get("host", str, "0.0.0.0"),  # noqa: S104
        "port": _int_between(sec, "port", defaults.PORT, 1, 65535),
        "tls": sec.get("tls", bool, True),
        "cert": _path(sec, "cert", base),
        "key": _path(sec, "key", base),
        "threads": threads,
        "access_log": None if access_log == "" else _log_target(access_log, base),
        **_front(sec, threads),
    }


def _front(sec: Section, threads: int) -> dict[str, Any]:
    """The connection front's keys (``broker.edge_worker``)."""
    request_threads = _int_between(sec, "request_threads", defaults.REQUEST_THREADS, 1, 4096)
    # Every thread may hold a connection, and idle kept-alive ones need room besides.
    least = threads + request_threads + 16
    connections = _int_between(sec, "max_connections", max(defaults.MAX_CONNECTIONS, least),
                               least, 1_000_000)  # fmt: skip
    return {
        "request_threads": request_threads,
        "handshake_timeout": _timeout(sec, "handshake_timeout", defaults.HANDSHAKE_TIMEOUT),
        "header_timeout": _timeout(sec, "header_timeout", defaults.HEADER_TIMEOUT),
        "max_connections": connections,
        "max_connections_per_address": _int_between(
            sec, "max_connections_per_address", defaults.MAX_CONNECTIONS_PER_ADDRESS, 1,
            connections,
        ),
    }


def _log_target(value: str, base: str) -> str:
    return value if value == "-" else os.path.join(base, os.path.expanduser(value))


def _jobs(sec: Section) -> dict[str, Any]:
    sec.check_keys(
        {"lease_ttl", "queue_ttl", "agent_absent_after", "retention", "housekeeping_interval"}
    )
    values = {
        "lease_ttl": sec.convert("lease_ttl", parse_duration, defaults.LEASE_TTL),
        "queue_ttl": sec.convert("queue_ttl", parse_duration, defaults.QUEUE_TTL),
        "agent_absent_after": sec.convert(
            "agent_absent_after", parse_duration, defaults.AGENT_ABSENT_AFTER
        ),
        "retention": sec.convert("retention", parse_duration, defaults.RETENTION),
        "housekeeping_interval": sec.convert(
            "housekeeping_interval", parse_duration, defaults.HOUSEKEEPING_INTERVAL
        ),
    }
    for key, value in values.items():
        if value <= 0:
            raise sec.error("must be longer than 0 s", key)
    return values


def _limits(sec: Section) -> dict[str, Any]:
    sec.check_keys(
        {"max_input_size", "max_result_size", "max_log_size", "max_json_size",
         "long_polls_per_token", "body_timeout", "min_body_rate"}
    )  # fmt: skip
    polls = sec.get("long_polls_per_token", int, defaults.LONG_POLLS_PER_TOKEN)
    if polls < 1:
        raise sec.error("must be at least 1", "long_polls_per_token")
    body_timeout = sec.convert("body_timeout", parse_duration, defaults.BODY_TIMEOUT)
    if body_timeout <= 0:
        raise sec.error('must be longer than 0 s (e.g. "120s")', "body_timeout")
    rate = sec.convert("min_body_rate", parse_size, defaults.MIN_BODY_RATE)
    if rate < 1:
        raise sec.error('must be at least 1 byte (per second; e.g. "1KiB")', "min_body_rate")
    return {
        "max_input_size": sec.convert("max_input_size", parse_size, None),
        "max_result_size": sec.convert("max_result_size", parse_size, None),
        "max_log_size": sec.convert("max_log_size", parse_size, None),
        "max_json_size": sec.convert("max_json_size", parse_size, defaults.MAX_JSON_BYTES),
        "long_polls_per_token": polls,
        "body_timeout": body_timeout,
        "min_body_rate": rate,
    }


def _log_format(sec: Section) -> str:
    sec.check_keys({"format"})
    value = sec.get("format", str, TEXT)
    if value not in LOG_FORMATS:
        raise sec.error(f"must be one of {', '.join(LOG_FORMATS)}, not {value!r}", "format")
    return value


def _check_tls(config: BrokerConfig, server: Section) -> None:
    if config.tls:
        if not config.cert or not config.key:
            raise server.error(
                "cert and key are required with TLS (the default); set both to PEM files, or "
                "set tls = false only behind a TLS reverse proxy on this machine",
                "cert" if not config.cert else "key",
            )
        return
    if not is_loopback(config.host):
        raise server.error(
            "tls = false is allowed only when host is a loopback address (127.0.0.1, ::1, "
            f"localhost), behind a TLS reverse proxy; {config.host!r} would serve tokens "
            "unencrypted",
            "tls",
        )


def check_tls_files(config: BrokerConfig) -> None:
    """At start: the certificate and key must be readable, with a message that says which."""
    for key, path in (("cert", config.cert), ("key", config.key)):
        if config.tls and path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"{config.source}: server.{key}: cannot read {path}", field=key)
