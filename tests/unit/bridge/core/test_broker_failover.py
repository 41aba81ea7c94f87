"""Several instances of one broker: which failures move a session to the next instance.

Real sockets and real ``requests`` against two scripted servers on loopback (and a closed port
for an instance that is down); the backoff sleeps are recorded, never waited out.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.broker_endpoint import BrokerEndpoint, check_broker_urls
from bridge.core.broker_session import BrokerSession
from bridge.core.errors import AuthenticationFailed, BrokerUnavailable, ConfigError, JobUnknown
from bridge.core.streams import FileSlice
from tests.support.scripted_http import Reply, Scripted, SleepRecorder, serving, write_token


@pytest.fixture
def two() -> Iterator[tuple[Scripted, str, Scripted, str]]:
    first, second = Scripted(), Scripted()
    with serving(first) as url_a, serving(second) as url_b:
        yield first, url_a, second, url_b


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def session(
    urls: list[str], tmp_path: Path, **kwargs: object
) -> tuple[BrokerSession, SleepRecorder]:
    token_file = write_token(tmp_path / "token", 0o600)
    sleep = SleepRecorder()
    endpoint = BrokerEndpoint(urls[0], str(token_file), allow_http=True, where="test",
                              urls=tuple(urls))  # fmt: skip
    return BrokerSession(endpoint, sleep=sleep, **kwargs), sleep  # type: ignore[arg-type]


def test_a_down_instance_fails_over_at_once_and_sticks(
    two: tuple[Scripted, str, Scripted, str], tmp_path: Path
) -> None:
    _, _, second, url_b = two
    s, sleep = session([closed_port_url(), url_b], tmp_path)
    second.replies = [Reply(200, b'{"n": 1}'), Reply(200, b'{"n": 2}')]
    assert s.json("GET", "/api/v1/jobs/x") == {"n": 1}
    assert s.base == url_b
    assert s.json("GET", "/api/v1/jobs/y") == {"n": 2}  # straight to b: sticky
    assert [seen.path for seen in second.seen] == ["/api/v1/jobs/x", "/api/v1/jobs/y"]
    assert sleep.delays == []  # failing over needs no backoff


@pytest.mark.parametrize("status", [502, 503])
def test_502_and_503_fail_over(
    two: tuple[Scripted, str, Scripted, str], tmp_path: Path, status: int
) -> None:
    first, url_a, second, url_b = two
    first.replies = [Reply.error(status, "unavailable", "store down")]
    second.replies = [Reply(200, b'{"from": "b"}')]
    s, _ = session([url_a, url_b], tmp_path)
    assert s.json("POST", "/api/v1/jobs", json={"a": 1}) == {"from": "b"}
    assert second.seen[0].body == b'{"a": 1}'  # the same request, replayed whole


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(401, "unauthorized", AuthenticationFailed), (404, "not_found", JobUnknown),
     (400, "invalid", Exception)],
)  # fmt: skip
def test_a_client_error_is_never_retried_on_another_instance(
    two: tuple[Scripted, str, Scripted, str], tmp_path: Path, status: int, code: str,
    error: type[Exception],
) -> None:  # fmt: skip
    first, url_a, second, url_b = two
    first.replies = [Reply.error(status, code, "your mistake")]
    s, _ = session([url_a, url_b], tmp_path)
    with pytest.raises(error, match="your mistake"):
        s.json("GET", "/api/v1/jobs/x")
    assert second.seen == []
    assert s.base == url_a


def test_429_stays_on_the_instance_and_backs_off(
    two: tuple[Scripted, str, Scripted, str], tmp_path: Path
) -> None:
    first, url_a, second, url_b = two
    first.replies = [Reply.error(429, "rate_limited", "slow", **{"Retry-After": "2"}),
                     Reply(200, b"{}")]  # fmt: skip
    s, sleep = session([url_a, url_b], tmp_path)
    s.json("GET", "/x")
    assert len(first.seen) == 2 and second.seen == []
    assert sleep.delays[0] >= 2


def test_all_instances_down_backs_off_then_fails(tmp_path: Path) -> None:
    s, sleep = session([closed_port_url(), closed_port_url()], tmp_path, attempts=3)
    with pytest.raises(Exception, match="unreachable") as caught:
        s.json("GET", "/x")
    assert getattr(caught.value, "transient", False)
    assert len(sleep.delays) == 2  # one backoff per round over both instances


def test_500_is_retried_on_the_same_instance(
    two: tuple[Scripted, str, Scripted, str], tmp_path: Path
) -> None:
    first, url_a, second, url_b = two
    first.replies = [Reply.error(500, "internal_error", "bug")] * 2
    s, _ = session([url_a, url_b], tmp_path, attempts=2)
    with pytest.raises(BrokerUnavailable, match="bug"):
        s.json("GET", "/x")
    assert len(first.seen) == 2 and second.seen == []


def test_a_streamed_body_is_not_resent_but_the_next_call_goes_elsewhere(
    two: tuple[Scripted, str, Scripted, str], tmp_path: Path
) -> None:
    first, url_a, second, url_b = two
    data = tmp_path / "input.bin"
    data.write_bytes(b"x" * 1000)
    first.replies = [Reply.error(503, "unavailable", "going away")]
    s, _ = session([url_a, url_b], tmp_path)
    with data.open("rb") as handle, pytest.raises(BrokerUnavailable):
        s.request("PATCH", "/api/v1/jobs/x/inputs/a", body=FileSlice(handle, 0, 1000, "a"),
                  ok=(204,), retry=False)  # fmt: skip
    assert second.seen == []
    assert s.base == url_b  # the caller's resume (HEAD, then PATCH) goes to b
    s.request("HEAD", "/api/v1/jobs/x/inputs/a")
    assert second.seen[0].method == "HEAD"


# --- url / urls in a config ----------------------------------------------------------------


def test_url_alone_still_works() -> None:
    assert check_broker_urls("https://b.example.org/", None, False, "w") == (
        "https://b.example.org",
    )


def test_urls_lists_every_instance_in_order() -> None:
    urls = ["https://a.example.org", "https://b.example.org:50443"]
    assert check_broker_urls(None, urls, False, "w") == tuple(urls)


@pytest.mark.parametrize(
    ("url", "urls", "message"),
    [
        ("https://a.example.org", ["https://b.example.org"], r"w: set either url or urls"),
        (None, None, r"w\.url: is required"),
        (None, [], r"w\.urls: must be a non-empty list"),
        (None, "https://a.example.org", r"w\.urls: must be a non-empty list"),
        (None, ["https://a.example.org", "http://b.example.org"], r"w\.urls\[1\]: plain http"),
        (None, ["https://a.example.org", "https://a.example.org/"], r"w\.urls\[1\]: .* twice"),
        (7, None, r"w\.url: must be a str"),
    ],
)
def test_bad_url_settings_name_the_key(url: object, urls: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_broker_urls(url, urls, False, "w")
