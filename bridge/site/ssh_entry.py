"""Process entry of ``mint-bridge site serve-ssh``: logging to the site log, never to the peer."""

from __future__ import annotations

import logging
import os
import sys

from bridge.core.errors import BridgeError
from bridge.core.protocol import FdChannel
from bridge.site.config import SiteConfig, load_site_config
from bridge.site.session import RefusedRequest, Session, check_original_command

log = logging.getLogger(__name__)
DEFAULT_LOG = "~/.local/state/mint-bridge/site.log"


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
        log.error("site config unusable: %s", exc)
        sys.stderr.write(f"mint-bridge: site configuration error: {exc}\n")
        return 78
    setup_site_logging(site)
    try:
        check_original_command(original_command)
    except RefusedRequest as exc:
        log.warning("refused: %s", exc)
        sys.stderr.write(f"mint-bridge: {exc}\n")
        return 77
    return Session(site, FdChannel(sys.stdin.fileno(), sys.stdout.fileno())).serve()
