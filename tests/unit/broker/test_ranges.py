"""RFC 9110 section 14 ranges: the decision (``broker.ranges.plan``) and the bytes that go out.

The first table is the pure decision; the second sends each case through the app (Flask's test
client) and checks status, ``Content-Range`` and the exact bytes, multipart parts included.
"""

from __future__ import annotations

import hashlib
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from broker import ranges
from broker.app import create_app
from broker.auth import new_token
from broker.config import BrokerConfig
from broker.ranges import Full, Partial, Unsatisfiable
from broker.runtime import EXTENSION, Broker
from broker.store import Scope

DATA = bytes(range(100))  # 100 bytes, each its own offset: a wrong slice shows at once
ETAG = hashlib.sha256(DATA).hexdigest()

PLANS: list[tuple[str | None, str | None, ranges.Plan]] = [
    (None, None, Full()),
    ("bytes=0-", None, Partial(((0, 99),))),
    ("bytes=10-19", None, Partial(((10, 19),))),
    ("BYTES = 10-19", None, Partial(((10, 19),))),  # the unit is case-insensitive
    ("bytes=90-500", None, Partial(((90, 99),))),  # a last-pos past the end: to the end
    ("bytes=-10", None, Partial(((90, 99),))),
    ("bytes=-100", None, Partial(((0, 99),))),
    ("bytes=-5000", None, Partial(((0, 99),))),  # a suffix longer than the file: all of it
    ("bytes=0-0,-1", None, Partial(((0, 0), (99, 99)))),
    ("bytes=50-59, 0-9", None, Partial(((0, 9), (50, 59)))),  # sorted
    ("bytes=0-9,5-19,20-29", None, Partial(((0, 29),))),  # overlapping and adjacent: one
    ("bytes=0-9,200-300", None, Partial(((0, 9),))),  # the unsatisfiable one is dropped
    ("bytes=,0-9,", None, Partial(((0, 9),))),  # empty list elements are allowed
    ("items=0-9", None, Full()),  # an unknown unit is ignored
    ("0-9", None, Full()),  # no ranges-specifier at all
    ("bytes=" + ",".join(f"{i * 3}-{i * 3}" for i in range(20)), None, Full()),  # too many
    ("bytes=100-", None, Unsatisfiable()),  # starts at the end
    ("bytes=100-200,300-", None, Unsatisfiable()),
    ("bytes=-0", None, Unsatisfiable()),  # an empty suffix selects nothing
    ("bytes=9-5", None, Unsatisfiable()),  # last below first: invalid
    ("bytes=a-b", None, Unsatisfiable()),
    ("bytes=", None, Unsatisfiable()),
    ("bytes=1-2-3", None, Unsatisfiable()),
    ("bytes=10-19", f'"{ETAG}"', Partial(((10, 19),))),  # If-Range matches: the range
    ("bytes=10-19", '"0000"', Full()),  # another version: the whole file
    ("bytes=10-19", f'W/"{ETAG}"', Full()),  # a weak tag never matches
    ("bytes=10-19", "Tue, 01 Dec 2026 10:00:00 GMT", Full()),  # no Last-Modified: no date
    ("bytes=100-", '"0000"', Full()),  # If-Range fails before the range is looked at
]


@pytest.mark.parametrize(("value", "if_range", "expected"), PLANS)
def test_plan_follows_rfc_9110(value: str | None, if_range: str | None,
                               expected: ranges.Plan) -> None:  # fmt: skip
    assert ranges.plan(value, if_range, ETAG, len(DATA)) == expected


def test_a_zero_length_file_satisfies_no_range() -> None:
    assert ranges.plan("bytes=-5", None, ETAG, 0) == Unsatisfiable()
    assert ranges.plan("bytes=0-", None, ETAG, 0) == Unsatisfiable()


def test_an_overlong_range_header_is_ignored() -> None:
    assert ranges.plan("bytes=0-1" + " " * 2000, None, ETAG, 100) == Full()


@pytest.fixture
def served(tmp_path: Path) -> tuple[Any, str, dict[str, str]]:
    """A Flask test client, the URL of a 100-byte input and the agent's headers."""
    app: Flask = create_app(BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1"),
                            housekeeping=False)  # fmt: skip
    broker = app.extensions[EXTENSION]
    assert isinstance(broker, Broker)
    headers, agent = {}, {}
    for scope, subject, into in ((Scope.CLIENT, "c", headers), (Scope.SITE, "s", agent)):
        token, record = new_token(scope, subject, 0.0)
        broker.store.create_token(record)
        into["Authorization"] = f"Bearer {token}"
    client = app.test_client()
    body = {"job_id": str(uuid.uuid4()), "site": "s", "command": "x",
            "inputs": [{"name": "a", "size": len(DATA), "sha256": ETAG}]}  # fmt: skip
    job_id = client.post("/api/v1/jobs", json=body, headers=headers).get_json()["job_id"]
    client.patch(f"/api/v1/jobs/{job_id}/inputs/a", data=DATA,
                 headers={**headers, "Upload-Offset": "0"})  # fmt: skip
    client.post(f"/api/v1/jobs/{job_id}/submit", headers=headers)
    assert broker.store.claim("s", "a1", 60, broker.clock()) is not None
    return client, f"/api/v1/agent/jobs/{job_id}/inputs/a", agent


ANSWERS: list[tuple[dict[str, str], int, str | None, bytes]] = [
    ({}, 200, None, DATA),
    ({"Range": "bytes=10-19"}, 206, "bytes 10-19/100", DATA[10:20]),
    ({"Range": "bytes=-5000"}, 206, "bytes 0-99/100", DATA),
    ({"Range": "bytes=-7"}, 206, "bytes 93-99/100", DATA[93:]),
    ({"Range": "bytes=95-1000"}, 206, "bytes 95-99/100", DATA[95:]),
    ({"Range": "bytes=0-9,5-29"}, 206, "bytes 0-29/100", DATA[:30]),  # coalesced
    ({"Range": "items=0-9"}, 200, None, DATA),
    ({"Range": "bytes=10-19", "If-Range": '"other"'}, 200, None, DATA),
    ({"Range": "bytes=10-19", "If-Range": f'"{ETAG}"'}, 206, "bytes 10-19/100", DATA[10:20]),
    ({"Range": "bytes=100-"}, 416, "bytes */100", b""),
    ({"Range": "bytes=9-5"}, 416, "bytes */100", b""),
]


@pytest.mark.parametrize(("extra", "status", "content_range", "body"), ANSWERS)
def test_the_answer_carries_exactly_the_chosen_bytes(
    served: tuple[Any, str, dict[str, str]], extra: dict[str, str], status: int,
    content_range: str | None, body: bytes,
) -> None:  # fmt: skip
    client, url, agent = served
    response = client.get(url, headers={**agent, **extra})
    assert response.status_code == status
    assert response.headers.get("Content-Range") == content_range
    if status == 416:
        assert response.get_json()["error"]["code"] == "range_not_satisfiable"
        return
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.data == body
    assert int(response.headers["Content-Length"]) == len(body)
    assert response.headers["ETag"] == f'"{ETAG}"'


def test_several_ranges_come_as_multipart_byteranges(
    served: tuple[Any, str, dict[str, str]],
) -> None:
    client, url, agent = served
    response = client.get(url, headers={**agent, "Range": "bytes=90-,0-4,-200x"})
    assert response.status_code == 416  # one malformed spec makes the whole set invalid
    response = client.get(url, headers={**agent, "Range": "bytes=90-,0-4"})
    assert response.status_code == 206 and "Content-Range" not in response.headers
    assert int(response.headers["Content-Length"]) == len(response.data)
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + response.data
    )
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in message.iter_parts()]
    assert parts == [("bytes 0-4/100", DATA[:5]), ("bytes 90-99/100", DATA[90:])]


def test_head_and_if_none_match_ignore_the_range(served: tuple[Any, str, dict[str, str]]) -> None:
    client, url, agent = served
    head = client.head(url, headers={**agent, "Range": "bytes=0-9"})
    assert head.status_code == 200 and head.headers["Content-Length"] == "100"
    cached = client.get(url, headers={**agent, "Range": "bytes=0-9",
                                      "If-None-Match": f'"{ETAG}"'})  # fmt: skip
    assert cached.status_code == 304 and cached.data == b""
