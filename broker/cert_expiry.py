"""When the broker's TLS certificate expires, for ``/metrics`` and its alert rule.

Read from the ``[server] cert`` file at each scrape, and parsed again only when the file
changed (its size and mtime), so a certificate renewed in place shows at the next scrape even
before gunicorn is reloaded. Never reads the key.
"""

from __future__ import annotations

import logging
import os
import threading

from cryptography import x509

log = logging.getLogger(__name__)

_lock = threading.Lock()
_cache: dict[str, tuple[tuple[int, int], float | None]] = {}


def not_after(path: str) -> float | None:
    """The first certificate's notAfter (Unix time) in the PEM file, or None if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_size, st.st_mtime_ns)
    with _lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
    value = _read(path)
    with _lock:
        _cache[path] = (key, value)
    return value


def _read(path: str) -> float | None:
    try:
        with open(path, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError) as exc:
        log.warning("cannot read the TLS certificate %s for its expiry: %s", path, exc)
        return None
    return cert.not_valid_after_utc.timestamp()
