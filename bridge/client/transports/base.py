"""Transports: how the bridge opens a channel to a site's entry point.

A ``Connection`` is one link to a site (one SSH connection per job); each ``open_channel`` runs
the site entry once, with our protocol marker as the requested command. The ``local`` method
starts the same entry point as a child process over pipes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Any, Protocol

from bridge.client.node_config import LocalSite
from bridge.core import defaults
from bridge.core.errors import SiteUnreachable, TransportError
from bridge.core.protocol import PROTOCOL_VERSION, ByteChannel, FdChannel

PROTOCOL_COMMAND = f"{defaults.PROTOCOL_REQUEST} {PROTOCOL_VERSION}"


class Channel(ByteChannel, Protocol):
    def close(self) -> None: ...


class Connection(Protocol):
    def open_channel(self, timeout: float | None = None) -> Channel: ...

    def close(self) -> None: ...


class Connector(Protocol):
    """Makes connections to one site; ``connect`` raises TransportError subclasses."""

    site_name: str

    def connect(self) -> Connection: ...


CHILD_EXIT_WAIT = 5.0  # seconds a closed channel's child gets to exit before it is killed


def spawn_piped(argv: list[str], what: str, **options: Any) -> subprocess.Popen[bytes]:
    """Start a channel's child with stdin and stdout as pipes; SiteUnreachable if it cannot."""
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, **options
        )
    except OSError as exc:
        raise SiteUnreachable(f"cannot start {what}: {exc}") from exc


class ProcessChannel(FdChannel):
    """A channel that is a child process's stdin and stdout (the local site entry, ``ssh``)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        super().__init__(proc.stdout.fileno(), proc.stdin.fileno())
        self.proc = proc

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self.proc.wait(timeout=CHILD_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class LocalConnection:
    def __init__(self, site: LocalSite) -> None:
        self.site = site

    def open_channel(self, timeout: float | None = None) -> Channel:
        env = dict(os.environ, SSH_ORIGINAL_COMMAND=PROTOCOL_COMMAND)
        # The console script's fast path to the site entry: no click, no CLI module.
        argv = [sys.executable, "-m", "bridge.launcher", "site", "serve-ssh"]
        argv += ["--config", self.site.site_config]
        return ProcessChannel(spawn_piped(argv, "the local site entry", env=env))

    def close(self) -> None:
        return None


class LocalConnector:
    def __init__(self, site: LocalSite) -> None:
        self.site = site
        self.site_name = site.name

    def connect(self) -> Connection:
        if not os.path.isfile(self.site.site_config):
            raise TransportError(f"site config {self.site.site_config} of local site is missing")
        return LocalConnection(self.site)
