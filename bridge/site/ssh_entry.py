"""Process entry of ``mint-bridge site serve-ssh``: logging to the site log, never to the peer.

A site config that does not load is answered in the protocol, as an error frame naming the
file, the key and the fix (and on stderr, for a person who runs the command by hand), so the
bridge shows it at once with either SSH client instead of seeing a dropped connection that
it would retry. The error frame is only sent to a client that asked for our protocol.
"""

from __future__ import annotations

import logging
import os
import select
import sys

from bridge.core import defaults
from bridge.core.errors import BridgeError, SiteConfigInvalid
from bridge.core.protocol import FdChannel, FrameReader, FrameWriter
from bridge.site import audit
from bridge.site.audit_chain import AuditWriter
from bridge.site.config import SiteConfig, load_site_config
from bridge.site.session import RefusedRequest, Session, check_original_command
from bridge.site.ssh_peer import ssh_peer

log = logging.getLogger(__name__)
DEFAULT_LOG = "~/.local/state/mint-bridge/site.log"
# How long the entry waits for the bridge's request before it answers a config error anyway:
# the bridge sends it at once, so this only bounds a client that never does.
REQUEST_WAIT_SECONDS = 5.0


def setup_site_logging(site: SiteConfig | None) -> None:
    """Log to the site's log file: stderr belongs to the SSH channel, not to our diagnostics."""
    path = os.path.expanduser(site.log_file if site and site.log_file else DEFAULT_LOG)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    peer = os.environ.get("SSH_CLIENT", "local").split(" ")[0]
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s pid=%(process)d peer={peer} %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def serve_stdio(config_path: str, original_command: str | None) -> int:
    try:
        site = load_site_config(config_path)
    except BridgeError as exc:
        setup_site_logging(None)
        error = site_config_error(config_path, exc)
        log.error("site config unusable: %s", error.message)
        sys.stderr.write(f"mint-bridge: site configuration error: {error.message}\n")
        if _asks_for_protocol(original_command):
            answer_error(error, sys.stdin.fileno(), sys.stdout.fileno())
        return int(error.exit_code)
    setup_site_logging(site)
    try:
        check_original_command(original_command)
    except RefusedRequest as exc:
        log.warning("refused: %s", exc)
        attempted = "an interactive shell" if original_command is None else original_command
        audit.refused(AuditWriter(site.audit_dir), ssh_peer(os.environ), attempted, str(exc))
        sys.stderr.write(f"mint-bridge: {exc}\n")
        return 77
    channel = FdChannel(sys.stdin.fileno(), sys.stdout.fileno())
    return Session(site, channel, peer=ssh_peer(os.environ)).serve()


def site_config_error(path: str, exc: BridgeError) -> SiteConfigInvalid:
    """The config error as the bridge shows it: the file, what is wrong in it, and the fix."""
    if not os.path.exists(path):
        return SiteConfigInvalid(
            f"site config {path} does not exist; create it, or correct --config in the "
            "forced command of MInt's key (the site account's authorized_keys)",
            field="site_config",
        )
    if not os.access(path, os.R_OK):
        return SiteConfigInvalid(
            f"site config {path} cannot be read by the site account; make it readable "
            "(chmod 600, owned by that account)",
            field="site_config",
        )
    # The loader's message starts with the file ("FILE: key: what" or "FILE is not valid
    # TOML: ..."); it is named once here, in front.
    detail = exc.message.removeprefix(path).removeprefix(":").strip()
    joiner = " " if detail.startswith("is ") else ": "
    return SiteConfigInvalid(
        f"site config {path}{joiner}{detail}; fix it in that file", field=exc.field
    )


def answer_error(error: BridgeError, read_fd: int, write_fd: int) -> None:
    """Answer the bridge's request with ``error``: the request is read first, so the bridge
    never finds the channel closed while it still sends, then the error frame is written."""
    channel = FdChannel(read_fd, write_fd)
    if _readable(read_fd, REQUEST_WAIT_SECONDS):
        try:
            FrameReader(channel).read_json()
        except BridgeError as exc:  # whatever it sent, the answer is the same
            log.info("the request before the config error was unreadable: %s", exc)
    try:
        FrameWriter(channel).write_json({"error": error.to_wire()})
    except BridgeError as exc:
        log.info("the bridge left before the config error was sent: %s", exc)


def _asks_for_protocol(original_command: str | None) -> bool:
    words = (original_command or "").split()
    return bool(words) and words[0] == defaults.PROTOCOL_REQUEST


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()  # not select(): it fails for descriptors above 1023
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))
