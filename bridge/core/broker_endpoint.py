"""Where a broker is and how we prove who we are: its URL rule, the loopback rule, the token file.

Shared by the bridge's broker client, the site's agent, the broker's own config (which host
may serve plain HTTP) and the setup checks. No network traffic happens here, and ``requests``
is not imported, so a config that only names a broker costs nothing to load.

What this module must never do: accept plain ``http://`` for a host that is not this machine,
accept a token file that others may read, or put any part of a token into a message.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from bridge.core import defaults
from bridge.core.errors import ConfigError
from bridge.core.units import parse_duration

if TYPE_CHECKING:
    from bridge.core.tomlconf import Section

# The bounds of ``read_timeout``: a second is the least a TLS answer over a slow link needs;
# ten minutes is longer than any broker answer takes, so more only hides a dead connection.
READ_TIMEOUT_RANGE = (1.0, 600.0)

# What a token may contain: it becomes a header value, so no whitespace or control characters.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where the broker is and how to prove who we are; ``where`` prefixes config errors."""

    url: str
    token_file: str
    ca_bundle: str | None = None
    allow_http: bool = False
    where: str = "broker"
    # Every instance of the broker, ``url`` first; empty means ``url`` alone.
    urls: tuple[str, ...] = ()
    # Seconds a call may go without a byte from the broker before it counts as lost (a
    # black-holed connection) and is retried; a long poll adds its wait to it.
    read_timeout: float = defaults.HTTP_READ_TIMEOUT

    def key(self, name: str) -> str:
        return f"{self.where}.{name}"

    def all_urls(self) -> tuple[str, ...]:
        return self.urls or (self.url,)


class BrokerSettings(Protocol):
    """A config section that names a broker: the bridge's broker site, the site's agent."""

    @property
    def url(self) -> str: ...
    @property
    def token_file(self) -> str: ...
    @property
    def ca_bundle(self) -> str | None: ...
    @property
    def allow_http(self) -> bool: ...
    @property
    def where(self) -> str: ...
    @property
    def urls(self) -> tuple[str, ...]: ...
    @property
    def read_timeout(self) -> float: ...


def endpoint_of(settings: BrokerSettings, where: str | None = None) -> BrokerEndpoint:
    """The endpoint a config section describes; ``where`` overrides the section's own prefix."""
    return BrokerEndpoint(
        settings.url,
        settings.token_file,
        settings.ca_bundle,
        settings.allow_http,
        where or settings.where or "broker",
        settings.urls,
        settings.read_timeout,
    )


def read_timeout_value(sec: Section) -> float:
    """``read_timeout`` of a table that names a broker (seconds, or a duration such as "2m")."""
    value = sec.convert("read_timeout", parse_duration, defaults.HTTP_READ_TIMEOUT)
    low, high = READ_TIMEOUT_RANGE
    if not low <= value <= high:
        raise sec.error(
            f"must be between {low:g} and {high:g} seconds (e.g. read_timeout = \"60s\", the "
            "default)", "read_timeout",
        )  # fmt: skip
    return value


def check_broker_urls(url: object, urls: object, allow_http: bool, where: str) -> tuple[str, ...]:
    """The broker's instances from a config table's ``url`` or ``urls`` (exactly one of them).

    ``urls = [...]`` lists several instances of one broker (all on one database); clients and
    agents fail over between them. Each is checked like ``url``, and a repeat is refused (it
    would only make a failover try the same instance twice).
    """
    if url is not None and urls is not None:
        raise ConfigError(
            f"{where}: set either url or urls, not both; put every instance in urls = [...]",
            field="urls",
        )
    if urls is None:
        if url is None:
            raise ConfigError(
                f"{where}.url: is required: the broker's address, https://HOST[:PORT] (or "
                "urls = [...] for several instances)",
                field="url",
            )
        if not isinstance(url, str):
            raise ConfigError(f"{where}.url: must be a str, not {type(url).__name__}", field="url")
        return (check_broker_url(url, allow_http, where),)
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ConfigError(
            f'{where}.urls: must be a non-empty list of strings, e.g. urls = ["https://a:50443", '
            '"https://b:50443"]',
            field="urls",
        )
    checked = tuple(check_broker_url(u, allow_http, where, f"urls[{i}]")
                    for i, u in enumerate(urls))  # fmt: skip
    for i, candidate in enumerate(checked):
        if candidate in checked[:i]:
            raise ConfigError(
                f"{where}.urls[{i}]: {candidate} is listed twice; name each instance once",
                field="urls",
            )
    return checked


def is_loopback(host: str) -> bool:
    """Whether traffic to ``host`` (a URL's host or a listen address) stays on this machine.

    Accepted: any 127.0.0.0/8 address, ``::1`` (with or without a zone), those IPv4 addresses
    written IPv4-mapped (``::ffff:127.0.0.1``), and the name ``localhost`` in any case. Refused
    on purpose: ``localhost.`` (an absolute name skips /etc/hosts and asks DNS, so a network
    answer would decide), ``localhost.localdomain`` and other aliases (they exist only where
    /etc/hosts says so), bracketed ``[::1]`` (URL syntax, not a host), and short forms like
    ``127.1`` that ``ipaddress`` does not read as addresses.
    """
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_broker_url(url: str, allow_http: bool, where: str, key: str = "url") -> str:
    """The broker's base URL without a trailing slash; ConfigError naming the key and the fix."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(
            f"{where}.{key}: {url!r:.120} is not a broker address; write https://HOST[:PORT]",
            field=key,
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{where}.{key}: must not contain a user name or password; put the token in the "
            "file named by token_file",
            field=key,
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}.{key}: must not have a query or fragment", field=key)
    if parts.scheme == "http":
        if not is_loopback(parts.hostname):
            raise ConfigError(
                f"{where}.{key}: plain http:// would send the token unencrypted to "
                f"{parts.hostname}; use https:// (http is only possible for a broker on this "
                "machine: 127.0.0.1, ::1 or localhost, with allow_http = true)",
                field=key,
            )
        if not allow_http:
            raise ConfigError(
                f"{where}.{key}: plain http:// is refused; use https://, or, for a broker on "
                f"this machine only, set {where}.allow_http = true",
                field="allow_http",
            )
    return url.rstrip("/")


def read_token(path: str, where: str = "broker") -> str:
    """The token in ``path``; the file must be private to its owner (like an SSH key)."""
    key = f"{where}.token_file"
    try:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(
                f"{key}: token file {path} is accessible by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}",
                field="token_file",
            )
        with open(path, encoding="ascii") as handle:
            token = handle.read(4096).strip()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{key}: token file {path} does not exist (a relative token_file is taken from "
            "its config file's directory); ask the broker admin for a token and save it there "
            "with mode 600",
            field="token_file",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not ASCII text"
        raise ConfigError(
            f"{key}: cannot read token file {path}: {reason}", field="token_file"
        ) from exc
    if not _TOKEN.fullmatch(token):
        # The token itself is never shown, not even in part.
        raise ConfigError(
            f"{key}: token file {path} does not hold a token (one line, no spaces)",
            field="token_file",
        )
    return token


__all__ = [
    "BrokerEndpoint",
    "BrokerSettings",
    "check_broker_url",
    "check_broker_urls",
    "endpoint_of",
    "is_loopback",
    "read_token",
]
