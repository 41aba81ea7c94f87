"""broker_session: retries with backoff and jitter, error mapping, the token's header, TLS.

The tests talk to a small scripted HTTP server on loopback (real sockets, real requests);
sleeping is replaced by a recorder, so no test waits for a backoff.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.broker_endpoint import BrokerEndpoint
from bridge.core.broker_session import BrokerSession, answer_count, answer_seconds
from bridge.core.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    ConfigError,
    Conflict,
    HostKeyRejected,
    InputRejected,
    JobUnknown,
    LeaseLost,
    ProtocolError,
    SiteUnreachable,
    TransferCorrupted,
)
from tests.support.broker import make_ca
from tests.support.scripted_http import (
    TOKEN,
    Reply,
    Scripted,
    SleepRecorder,
    serving,
    session_for,
    write_token,
)


@pytest.fixture
def server() -> Iterator[tuple[Scripted, str]]:
    script = Scripted()
    with serving(script) as url:
        yield script, url


# --- retries -------------------------------------------------------------------------------


def test_503_and_429_are_retried_honouring_retry_after(
    server: tuple[Scripted, str], tmp_path: Path
) -> None:
    script, url = server
    script.replies = [
        Reply.error(503, "unavailable", "busy", **{"Retry-After": "7"}),
        Reply.error(429, "rate_limited", "slow down", **{"Retry-After": "3"}),
        Reply(200, b'{"ok": true}'),
    ]
    session, sleep = session_for(url, tmp_path, max_wait=30.0)
    assert session.json("GET", "/api/v1/jobs/x") == {"ok": True}
    assert len(script.seen) == 3
    assert sleep.delays[0] >= 7 and sleep.delays[1] >= 3


def test_retry_after_is_bounded(server: tuple[Scripted, str], tmp_path: Path) -> None:
    script, url = server
    script.replies = [Reply.error(503, "unavailable", "x", **{"Retry-After": "100000"})]
    session, sleep = session_for(url, tmp_path, max_wait=4.0)
    session.json("GET", "/x")
    assert sleep.delays == [4.0]


def test_retry_after_as_http_date(server: tuple[Scripted, str], tmp_path: Path) -> None:
    script, url = server
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    script.replies = [Reply.error(503, "unavailable", "x", **{"Retry-After": when})]
    session, sleep = session_for(url, tmp_path, max_wait=60.0)
    session.json("GET", "/x")
    assert 15 <= sleep.delays[0] <= 21


def test_5xx_retries_are_bounded_with_full_jitter(
    server: tuple[Scripted, str], tmp_path: Path
) -> None:
    script, url = server
    script.replies = [Reply.error(500, "internal_error", "boom")] * 10
    session, sleep = session_for(url, tmp_path, attempts=4, initial_wait=1.0, max_wait=8.0)
    with pytest.raises(BrokerUnavailable, match="boom"):
        session.json("GET", "/x")
    assert len(script.seen) == 4
    assert len(sleep.delays) == 3
    # Full jitter: each wait is anywhere in [0, min(max, initial * 2**n)].
    for n, delay in enumerate(sleep.delays):
        assert 0 <= delay <= min(8.0, 1.0 * 2 ** (n + 1))


def test_connection_refused_is_transient_then_fails(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session, sleep = session_for(f"http://127.0.0.1:{port}", tmp_path, attempts=3)
    with pytest.raises(SiteUnreachable) as caught:
        session.json("GET", "/x")
    assert caught.value.transient
    assert len(sleep.delays) == 2
    assert isinstance(caught.value.__cause__, Exception)  # raised from the requests exception


def test_read_timeout_is_retried(server: tuple[Scripted, str], tmp_path: Path) -> None:
    script, url = server
    script.replies = [Reply(200, b"{}", delay=1.0), Reply(200, b'{"second": 1}')]
    session, _ = session_for(url, tmp_path)
    assert session.json("GET", "/x", timeout=0.2) == {"second": 1}


def test_the_endpoints_read_timeout_bounds_every_call(
    server: tuple[Scripted, str], tmp_path: Path
) -> None:
    """A broker that stays silent (a black-holed connection) is given up on after the
    configured ``read_timeout``, not the 60 s default, and the call is retried."""
    script, url = server
    script.replies = [Reply(200, b"{}", delay=2.0), Reply(200, b'{"second": 1}')]
    token_file = write_token(tmp_path / "token", 0o600)
    endpoint = BrokerEndpoint(url, str(token_file), allow_http=True, where="t", read_timeout=0.3)
    sleep = SleepRecorder()
    session = BrokerSession(endpoint, sleep=sleep)
    assert session.json("GET", "/x") == {"second": 1}
    assert len(sleep.delays) == 1  # one retry, after the silent first answer
    # A long poll waits its wait plus at most the read timeout; the default margin is 30 s.
    assert session.long_poll_timeout(20) == pytest.approx(20.3)
    default = BrokerSession(BrokerEndpoint(url, str(token_file), allow_http=True, where="t"))
    assert default.long_poll_timeout(20) == 50.0


ERRORS = [
    (Reply.error(401, "unauthorized", "unknown token"), AuthenticationFailed, "unknown token"),
    (Reply.error(403, "forbidden", "not your job"), AuthenticationFailed, "not your job"),
    (Reply.error(404, "not_found", "no job abc"), JobUnknown, "no job abc"),
    (Reply.error(409, "conflict", "different body"), Conflict, "different body"),
    (Reply.error(409, "stale_epoch", "epoch 3 < 4"), LeaseLost, "epoch 3 < 4"),
    (Reply.error(400, "checksum_mismatch", "sha differs"), TransferCorrupted, "sha differs"),
    (Reply.error(400, "unsafe_name", "name ../x"), InputRejected, "name ../x"),
    (Reply.error(413, "too_large", "limit is 10 GiB"), InputRejected, "limit is 10 GiB"),
    (Reply.error(400, "missing_field", "site is required"), ProtocolError, "site is required"),
    (Reply(302, b"", {"Location": "https://elsewhere/"}), ProtocolError, "redirect"),
    (Reply(418, b"not json"), ProtocolError, "HTTP 418"),
]


@pytest.mark.parametrize(("reply", "error", "text"), ERRORS)
def test_client_errors_fail_fast_with_the_broker_message(
    server: tuple[Scripted, str], tmp_path: Path, reply: Reply, error: type, text: str
) -> None:
    script, url = server
    script.replies = [reply]
    session, sleep = session_for(url, tmp_path)
    with pytest.raises(error) as caught:
        session.json("POST", "/api/v1/jobs", json={})
    assert text in str(caught.value)
    assert not caught.value.transient
    assert len(script.seen) == 1 and sleep.delays == []


def test_conflict_carries_the_offset_the_broker_holds(
    server: tuple[Scripted, str], tmp_path: Path
) -> None:
    script, url = server
    script.replies = [
        Reply.error(409, "offset_mismatch", "holds 4096", **{"Upload-Offset": "4096"}),
        Reply.error(409, "offset_mismatch", "log holds 10", **{"Log-Size": "10"}),
    ]
    session, _ = session_for(url, tmp_path)
    with pytest.raises(Conflict) as first:
        session.request("PATCH", "/a", body=b"x")
    assert (first.value.code, first.value.offset) == ("offset_mismatch", 4096)
    with pytest.raises(Conflict) as second:
        session.request("POST", "/b", body=b"x")
    assert second.value.offset == 10


def test_fresh_body_for_each_attempt(server: tuple[Scripted, str], tmp_path: Path) -> None:
    script, url = server
    script.replies = [Reply.error(503, "unavailable", "x"), Reply(204)]
    session, _ = session_for(url, tmp_path)
    made: list[int] = []

    def body() -> bytes:
        made.append(1)
        return b"payload"

    assert session.request("PATCH", "/u", body=body, ok=(204,)).status_code == 204
    assert len(made) == 2


# --- the token stays in its header ---------------------------------------------------------


def test_token_only_in_the_authorization_header_and_never_logged(
    server: tuple[Scripted, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script, url = server
    script.replies = [
        Reply.error(503, "unavailable", "busy"),
        Reply(200, b"{}"),
        Reply.error(401, "unauthorized", "revoked"),
        Reply(302, b"", {"Location": url + "/elsewhere"}),
    ]
    caplog.set_level(logging.DEBUG)  # urllib3 and requests too
    session, _ = session_for(url, tmp_path)
    session.json("GET", "/api/v1/jobs/abc", params={"wait": 1})
    with pytest.raises(AuthenticationFailed) as denied:
        session.json("POST", "/api/v1/jobs")
    with pytest.raises(ProtocolError):
        session.json("GET", "/api/v1/jobs")
    assert len(script.seen) == 4  # the redirect was not followed
    for seen in script.seen:
        assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in seen.path
        assert TOKEN.split("_")[-1] not in seen.path
    assert caplog.records  # something was logged (retries, debug lines)
    assert TOKEN not in caplog.text and TOKEN.split("_")[-1] not in caplog.text
    assert TOKEN not in str(denied.value)
    assert TOKEN not in repr(session._http.auth)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Scripted, str, Path]]:
    """The scripted server over TLS, its certificate from a throwaway CA (for 127.0.0.1)."""
    (tmp_path / "ca-dir").mkdir()
    ca, cert, key = make_ca(tmp_path / "ca-dir")
    script = Scripted()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serving(script, context) as url:
        yield script, url, ca


def test_tls_verified_against_the_configured_ca(
    tls_server: tuple[Scripted, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, url, ca = tls_server
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_ca(tmp_path / "other")
    # An environment pointing requests at another bundle must not override the config.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_ca))
    token_file = write_token(tmp_path / "token", 0o600)
    endpoint = BrokerEndpoint(url, str(token_file), ca_bundle=str(ca), where="w")
    assert BrokerSession(endpoint).json("GET", "/x") == {}
    assert script.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("bundle", ["none", "other"])
def test_untrusted_certificate_is_refused_and_not_retried(
    tls_server: tuple[Scripted, str, Path], tmp_path: Path, bundle: str
) -> None:
    script, url, _ = tls_server
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_ca(tmp_path / "other")
    token_file = write_token(tmp_path / "token", 0o600)
    ca_bundle = str(other_ca) if bundle == "other" else None
    endpoint = BrokerEndpoint(url, str(token_file), ca_bundle=ca_bundle, where="w")
    sleep = SleepRecorder()
    with pytest.raises(HostKeyRejected) as caught:
        BrokerSession(endpoint, sleep=sleep).json("GET", "/x")
    assert "w.ca_bundle" in caught.value.message
    assert sleep.delays == []
    assert script.seen == []  # the token never left: the handshake failed first


def test_tls_cut_mid_handshake_is_transient(tmp_path: Path) -> None:
    """A plain-HTTP server behind an https URL looks like a cut handshake: retried."""
    with serving(Scripted()) as plain_url:
        token_file = write_token(tmp_path / "token", 0o600)
        endpoint = BrokerEndpoint(plain_url.replace("http:", "https:"), str(token_file), where="w")
        sleep = SleepRecorder()
        with pytest.raises(SiteUnreachable):
            BrokerSession(endpoint, sleep=sleep, attempts=2).json("GET", "/x")
        assert len(sleep.delays) == 1


def test_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "token", 0o600)
    endpoint = BrokerEndpoint(
        "https://broker.example.org", str(token_file), ca_bundle=str(tmp_path / "none.pem")
    )
    with pytest.raises(ConfigError, match="ca_bundle"):
        BrokerSession(endpoint)


def test_token_file_is_checked_when_the_session_is_made(tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "token", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        BrokerSession(BrokerEndpoint("https://b.example.org", str(token_file)))
    assert os.stat(token_file).st_mode & 0o777 == 0o644  # never "fixed" behind the admin's back


def test_loopback_broker_is_never_reached_through_a_proxy(
    server: tuple[Scripted, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, url = server
    proxy = Scripted()
    with serving(proxy) as proxy_url:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, proxy_url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        session, _ = session_for(url, tmp_path)
        session.json("GET", "/x")
    assert proxy.seen == []
    assert len(script.seen) == 1


# --- values in answers ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "count"), [(0, 0), (7, 7), ("4096", 4096), ("0", 0)])
def test_counts_in_answers(value: object, count: int) -> None:
    assert answer_count(value, "offset") == count


@pytest.mark.parametrize("value", [-1, 1.5, 3.0, True, None, "", "-3", "1e3", " 5", "\u00b2", []])
def test_a_count_that_is_not_a_non_negative_integer_is_refused(value: object) -> None:
    with pytest.raises(ProtocolError, match="invalid Upload-Offset"):
        answer_count(value, "Upload-Offset")


@pytest.mark.parametrize(
    ("value", "seconds"), [(30, 30.0), (0.5, 0.5), (29.875, 29.875), ("9", 9.0)]
)
def test_durations_in_answers_keep_their_fraction(value: object, seconds: float) -> None:
    assert answer_seconds(value, "ttl") == seconds


@pytest.mark.parametrize("value", [-0.5, float("inf"), float("nan"), False, None, "1.5", {}])
def test_a_duration_that_is_not_a_finite_non_negative_number_is_refused(value: object) -> None:
    with pytest.raises(ProtocolError, match="invalid ttl"):
        answer_seconds(value, "ttl")


def _readme_certificate(directory: Path, dns: str, ip: str) -> tuple[Path, Path]:
    """Run the docs' openssl recipe for a broker certificate, for ``dns`` and ``ip``."""
    page = Path(__file__).resolve().parents[4] / "docs" / "broker.md"
    readme = page.read_text(encoding="utf-8")
    recipe = re.search(r"```sh\n\s*(openssl req -x509 .*?)\n\s*```", readme, re.S)
    assert recipe, "the README's certificate recipe"
    command = recipe.group(1).replace("\\\n", " ")
    command = command.replace("broker.example.org", dns).replace("192.0.2.20", ip)
    subprocess.run(shlex.split(command), cwd=directory, check=True, capture_output=True)
    return directory / "broker.crt", directory / "broker.key"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_readmes_self_signed_certificate_is_trusted_as_its_own_bundle(tmp_path: Path) -> None:
    cert, key = _readme_certificate(tmp_path, "localhost", "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    token_file = write_token(tmp_path / "token", 0o600)
    with serving(Scripted(), context) as url:
        endpoint = BrokerEndpoint(url, str(token_file), ca_bundle=str(cert), where="w")
        assert BrokerSession(endpoint).json("GET", "/x") == {}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_certificate_for_another_name_is_named_with_its_fix(tmp_path: Path) -> None:
    cert, key = _readme_certificate(tmp_path, "localhost", "192.0.2.20")  # not 127.0.0.1
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    token_file = write_token(tmp_path / "token", 0o600)
    script = Scripted()
    with serving(script, context) as url:
        endpoint = BrokerEndpoint(url, str(token_file), ca_bundle=str(cert), where="w")
        with pytest.raises(HostKeyRejected) as caught:
            BrokerSession(endpoint, sleep=SleepRecorder()).json("GET", "/x")
    assert "does not name 127.0.0.1 in its subjectAltName" in caught.value.message
    assert "A certificate for the broker" in caught.value.message
    assert script.seen == []
