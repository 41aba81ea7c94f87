"""How the broker health checks talk to a broker: one plain HTTP(S) request per call.

``http.client`` rather than our ``BrokerSession``: a health check must see each answer as it
is (no retries, no redirects followed, the raw status and headers), and the token goes only
into the ``Authorization`` header of a connection whose certificate the caller verified first.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from node_setup.health.runner import Deadline


@dataclass(frozen=True)
class BrokerTarget:
    url: str
    token_file: str | None
    ca_bundle: str | None = None
    allow_http: bool = False
    expected_scope: str | None = None  # "client", "site", "admin"; None: any valid scope
    site: str | None = None  # only this site's queue (a broker site of the bridge config)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    sent_at: float  # time.time() halfway through the request, for the clock skew

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}


class HealthClient:
    """One HTTP(S) connection per request; the token goes only into the header."""

    def __init__(self, url: str, ca_bundle: str | None, deadline: Deadline) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.ca_bundle = ca_bundle
        self.deadline = deadline

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_bundle)

    def get(self, path: str, token: str | None = None) -> Answer:
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.deadline.left(), context=self.context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.deadline.left())
        headers = {"Accept": "application/json", "User-Agent": "mint-bridge-health"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        started, wall = time.monotonic(), time.time()
        try:
            conn.request("GET", self.prefix + path, headers=headers)
            response = conn.getresponse()
            body = response.read(1 << 20)
            seconds = time.monotonic() - started
            found = {k.lower(): v for k, v in response.getheaders()}
            return Answer(response.status, found, body, seconds, wall + seconds / 2)
        finally:
            conn.close()
