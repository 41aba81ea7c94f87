"""RFC 9110 ranges through the real server: gunicorn, TLS from a throwaway CA, CLI-made tokens.

A 3 MiB input (more than one read chunk) is fetched with each kind of ``Range``; every body is
checked by SHA-256 against the slice it must be, multipart parts included. With CI=true a
broker that cannot start fails these tests instead of skipping them.
"""

from __future__ import annotations

import hashlib
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import pytest
import requests

from tests.support.broker import BrokerFactory, BrokerProcess

DATA = hashlib.shake_256(b"ranges").digest(3 << 20)
SIZE = len(DATA)
ETAG = hashlib.sha256(DATA).hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory(limits=f"max_input_size = {4 << 20}")


def call(broker: BrokerProcess, method: str, path: str, token: str, **kw: Any
         ) -> requests.Response:  # fmt: skip
    headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {token}"}
    return requests.request(method, broker.url + path, headers=headers, timeout=60,
                            verify=str(broker.ca_bundle), **kw)  # fmt: skip


@pytest.fixture(scope="module")
def input_url(broker: BrokerProcess) -> tuple[str, str]:
    """The agent URL of a claimed job's 3 MiB input, and the site token that may read it."""
    client, site = broker.token("client", "node1"), broker.token("site", "ranges")
    body = {"job_id": str(uuid.uuid4()), "site": "ranges", "command": "x",
            "inputs": [{"name": "big.dat", "size": SIZE, "sha256": ETAG}]}  # fmt: skip
    job_id = body["job_id"]
    assert call(broker, "POST", "/api/v1/jobs", client, json=body).status_code == 201
    patched = call(broker, "PATCH", f"/api/v1/jobs/{job_id}/inputs/big.dat", client, data=DATA,
                   headers={"Upload-Offset": "0",
                            "Content-Type": "application/offset+octet-stream"})  # fmt: skip
    assert patched.status_code == 204, patched.text
    assert call(broker, "POST", f"/api/v1/jobs/{job_id}/submit", client).status_code == 200
    claimed = call(broker, "POST", "/api/v1/agent/claim", site, json={"agent_id": "a1"})
    assert claimed.status_code == 200 and claimed.json()["job"]["job_id"] == job_id
    return f"/api/v1/agent/jobs/{job_id}/inputs/big.dat", site


CASES: list[tuple[dict[str, str], int, str | None, bytes]] = [
    ({}, 200, None, DATA),
    ({"Range": f"bytes={SIZE - 100}-"}, 206, f"bytes {SIZE - 100}-{SIZE - 1}/{SIZE}",
     DATA[-100:]),
    ({"Range": "bytes=1048570-2097160"}, 206, f"bytes 1048570-2097160/{SIZE}",
     DATA[1048570:2097161]),
    ({"Range": f"bytes=-{SIZE * 2}"}, 206, f"bytes 0-{SIZE - 1}/{SIZE}", DATA),
    ({"Range": "bytes=0-99,50-199"}, 206, f"bytes 0-199/{SIZE}", DATA[:200]),
    ({"Range": "pages=1-2"}, 200, None, DATA),
    ({"Range": "bytes=5-", "If-Range": '"stale"'}, 200, None, DATA),
    ({"Range": "bytes=5-", "If-Range": f'"{ETAG}"'}, 206, f"bytes 5-{SIZE - 1}/{SIZE}",
     DATA[5:]),
    ({"Range": f"bytes={SIZE}-"}, 416, f"bytes */{SIZE}", b""),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "status", "content_range", "body"), CASES)
def test_each_range_gets_exactly_its_bytes_over_tls(
    broker: BrokerProcess, input_url: tuple[str, str], extra: dict[str, str], status: int,
    content_range: str | None, body: bytes,
) -> None:  # fmt: skip
    url, site = input_url
    response = call(broker, "GET", url, site, headers=extra)
    assert response.status_code == status, response.text[:200]
    assert response.headers.get("Content-Range") == content_range
    if status == 416:
        assert response.json()["error"]["code"] == "range_not_satisfiable"
        return
    assert sha(response.content) == sha(body) and len(response.content) == len(body)
    assert response.headers["ETag"] == f'"{ETAG}"'
    assert response.headers["Accept-Ranges"] == "bytes"


def test_disjoint_ranges_arrive_as_multipart_byteranges_over_tls(
    broker: BrokerProcess, input_url: tuple[str, str]
) -> None:
    url, site = input_url
    spans = [(0, 9), (1 << 20, (2 << 20) + 5), (SIZE - 1, SIZE - 1)]
    value = "bytes=" + ",".join(f"{a}-{b}" for a, b in reversed(spans))
    response = call(broker, "GET", url, site, headers={"Range": value})
    assert response.status_code == 206
    assert int(response.headers["Content-Length"]) == len(response.content)
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode() + response.content
    )
    assert message.get_content_type() == "multipart/byteranges"
    parts = [(p["Content-Range"], sha(p.get_payload(decode=True))) for p in message.iter_parts()]
    assert parts == [(f"bytes {a}-{b}/{SIZE}", sha(DATA[a : b + 1])) for a, b in spans]
