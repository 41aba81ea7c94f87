"""``site_ping``: connect, ``hello``, read the version and command list, disconnect.

The cheapest full round trip to a site's entry point: it proves DNS, TCP, the host key, our
key, the forced command and the site config all work, and costs one SSH connection and a
Python start at the site. ``PingSchedule`` runs it on an interval (the bridge's
``mint-bridge health --watch``, or a broker process with its own ping function), so a site
that is down shows up before a module fails on it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.client.node_config import Site
from bridge.client.transports import connector_for
from bridge.client.transports.base import Channel, Connection, site_reader
from bridge.core.errors import BridgeError, ProtocolError, TransportError, from_wire
from bridge.core.probe import PROBE_COMMAND
from bridge.core.protocol import PROTOCOL_VERSION, FrameWriter

log = logging.getLogger(__name__)


class HelloFailed(ProtocolError):
    """The site entry ended without answering; ``stderr`` holds what it said, if anything."""

    def __init__(self, message: str, stderr: str = "", exit_status: int | None = None) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.exit_status = exit_status


@dataclass(frozen=True)
class Hello:
    version: str
    protocol: int
    site: str
    commands: tuple[str, ...]  # the site's own commands, without the built-in probe
    seconds: float  # from sending the request to reading the reply
    probe: bool = False  # the site answers the built-in probe job


def hello(connection: Connection, timeout: float) -> Hello:
    """Ask the site entry for its version and command list over a new channel."""
    channel = connection.open_channel(timeout=timeout)
    try:
        started = time.monotonic()
        try:
            FrameWriter(channel).write_json({"op": "hello", "protocol": PROTOCOL_VERSION})
            reply = site_reader(channel).read_json()
        except (TransportError, ProtocolError) as exc:
            stderr, status = _leftovers(channel)
            raise HelloFailed(str(exc), stderr, status) from exc
        seconds = time.monotonic() - started
    finally:
        channel.close()
    if "error" in reply:
        raise from_wire(reply["error"])
    return _parse(reply, seconds)


def _parse(reply: dict[str, Any], seconds: float) -> Hello:
    commands = reply.get("commands")
    protocol = reply.get("protocol")
    if not isinstance(commands, list) or not isinstance(protocol, int):
        raise ProtocolError(f"the site's hello reply is malformed: {str(reply)[:200]}")
    listed = [c for c in commands if isinstance(c, dict)]
    names = tuple(str(c.get("name")) for c in listed if not c.get("builtin"))
    probe = any(c.get("builtin") and c.get("name") == PROBE_COMMAND for c in listed)
    return Hello(
        str(reply.get("version", "?")), protocol, str(reply.get("site", "?")), names, seconds,
        probe,
    )  # fmt: skip


def _leftovers(channel: Channel) -> tuple[str, int | None]:
    """What the site entry wrote on stderr and its exit status (SSH channels only)."""
    raw = getattr(channel, "channel", None)  # the paramiko channel of an SshChannel
    if raw is None:
        return "", None
    chunks: list[bytes] = []
    with contextlib.suppress(Exception):  # best effort: the channel may already be gone
        raw.settimeout(2.0)
        while True:
            data = raw.recv_stderr(4096)
            if not data or sum(map(len, chunks)) > 8192:
                break
            chunks.append(bytes(data))
    status = None
    with contextlib.suppress(Exception):
        if raw.exit_status_ready():
            status = int(raw.recv_exit_status())
    return b"".join(chunks).decode("utf-8", "replace").strip(), status


@dataclass(frozen=True)
class PingResult:
    site: str
    ok: bool
    checked_at: float  # time.time()
    seconds: float  # the whole round trip: connect, hello, disconnect
    hello: Hello | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "ok": self.ok,
            "checked_at": self.checked_at,
            "seconds": round(self.seconds, 4),
            "version": self.hello.version if self.hello else None,
            "protocol": self.hello.protocol if self.hello else None,
            "commands": list(self.hello.commands) if self.hello else [],
            "error": self.error,
        }


def site_ping(site: Site, timeout: float) -> PingResult:
    started, wall = time.monotonic(), time.time()
    try:
        connection = connector_for(site, timeout).connect()
        try:
            reply = hello(connection, timeout)
        finally:
            connection.close()
    except BridgeError as exc:
        return PingResult(site.name, False, wall, time.monotonic() - started, None, str(exc))
    return PingResult(site.name, True, wall, time.monotonic() - started, reply)


@dataclass
class PingSchedule:
    """Pings each site every ``interval`` seconds in a background thread.

    ``latest`` holds the last result per site; ``on_change(old, new)`` is called when a site
    goes down or comes back (and for each site's first result). ``ping`` is any function from
    a site name to a ``PingResult``: ``site_ping`` over SSH on the bridge node, or a broker's
    own check that a pull site's agent answered recently.
    """

    ping: Callable[[str], PingResult]
    sites: list[str]
    interval: float
    on_change: Callable[[PingResult | None, PingResult], None] | None = None
    latest: dict[str, PingResult] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def run_once(self) -> dict[str, PingResult]:
        results: dict[str, PingResult] = {}
        for name in self.sites:
            result = self.ping(name)
            old = self.latest.get(name)
            self.latest[name] = results[name] = result
            if self.on_change and (old is None or old.ok != result.ok):
                self.on_change(old, result)
        return results

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="site-ping", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the loop to end (safe in a signal handler: it only sets a flag)."""
        self._stop.set()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped (True) or ``timeout`` passed (False)."""
        return self._stop.wait(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.run_once()
            except Exception:  # a broken ping function must not end the schedule
                log.exception("site ping round failed")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))
