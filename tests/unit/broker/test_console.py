"""The web console through Flask's test client: log-in, sessions and their expiry, CSRF, who
may change what, escaping, the job list's filters and keyset pages, and the page headers.

The browser end to end (Chromium, gunicorn, TLS, a real agent) is
tests/integration/test_console.py; here the clock is driven, so expiry needs no waiting.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from broker import defaults, housekeeping
from broker.app import create_app
from broker.auth import new_token
from broker.config import BrokerConfig
from broker.console import display, filters
from broker.console.access import LOGIN_COOKIE, SESSION_COOKIE
from broker.console.sessions import session_hash
from broker.errors import InvalidField
from broker.runtime import Broker
from broker.store import NewJob, Scope, State
from broker.store.sqlite import SQLiteStore
from tests.unit.broker.test_app import Clock

BASE = "https://localhost"  # the cookies are Secure: the test client sends them over https only
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Flask:
    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1")
    return create_app(config, housekeeping=False, clock=clock)


def broker_of(app: Flask) -> Broker:
    broker = app.extensions["mint_broker"]
    assert isinstance(broker, Broker)
    return broker


def make_token(app: Flask, scope: Scope, subject: str = "x") -> str:
    token, record = new_token(scope, subject, 0.0)
    broker_of(app).store.create_token(record)
    return token


def client_of(app: Flask) -> FlaskClient:
    return app.test_client()


def hidden(page: str, name: str = "csrf_token") -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match is not None, page[:2000]
    return match.group(1)


def log_in(client: FlaskClient, token: str, next_path: str = "") -> tuple[int, str]:
    form = client.get("/console/login", base_url=BASE)
    answer = client.post("/console/login", base_url=BASE, data={
        "csrf_token": hidden(form.text), "token": token, "next": next_path})  # fmt: skip
    return answer.status_code, answer.headers.get("Location", answer.text)


def admin_client(app: Flask) -> FlaskClient:
    client = client_of(app)
    assert log_in(client, make_token(app, Scope.ADMIN, "admin"))[0] == 303
    return client


def add_job(app: Flask, site: str = "s1", *, created: float, name: str | None = None,
            client: str = "c1", command: str = "fatigue") -> str:  # fmt: skip
    job_id = str(uuid.uuid4())
    metadata = {"name": name} if name is not None else {}
    spec = NewJob(job_id, client, site, command, metadata=metadata)
    store = broker_of(app).store
    store.create_job(spec, created)
    store.submit(job_id, created)
    return job_id


# --- log-in and sessions -----------------------------------------------------------------


def test_a_page_without_a_session_sends_the_browser_to_log_in(app: Flask) -> None:
    answer = client_of(app).get("/console/jobs?site=s1", base_url=BASE)
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/console/login?next=/console/jobs?site%3Ds1"


def test_log_in_sets_a_host_only_strict_cookie_and_returns_to_the_page(app: Flask) -> None:
    client = client_of(app)
    status, location = log_in(client, make_token(app, Scope.OPERATOR, "viewer"), "/console/sites")
    assert (status, location) == (303, "/console/sites")
    cookie = client.get_cookie(SESSION_COOKIE, domain="localhost")
    assert cookie is not None and cookie.secure and cookie.http_only
    assert cookie.same_site == "Strict" and cookie.path == "/"
    assert client.get_cookie(LOGIN_COOKIE, domain="localhost") is None  # used up
    assert client.get("/console/sites", base_url=BASE).status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x",
                                    "/console/\\\\evil", "/api/v1/jobs"])  # fmt: skip
def test_log_in_never_sends_the_browser_off_the_console(app: Flask, target: str) -> None:
    client = client_of(app)
    assert log_in(client, make_token(app, Scope.ADMIN, "admin"), target) == (303, "/console/")


@pytest.mark.parametrize("scope", [Scope.CLIENT, Scope.SITE])
def test_client_and_site_tokens_are_refused(app: Flask, scope: Scope) -> None:
    client = client_of(app)
    status, page = log_in(client, make_token(app, scope, "n1"))
    assert status == 403
    assert f"a {scope} token does not open the console" in page
    assert client.get_cookie(SESSION_COOKIE, domain="localhost") is None


def test_a_revoked_or_expired_token_cannot_log_in(app: Flask, clock: Clock) -> None:
    store = broker_of(app).store
    token, record = new_token(Scope.OPERATOR, "old", 0.0, expires_at=clock.now + 10)
    store.create_token(record)
    clock.now += 20
    assert log_in(client_of(app), token)[0] == 401
    revoked = make_token(app, Scope.ADMIN, "admin")
    store.revoke_token(revoked.split("_")[1], clock.now)
    assert log_in(client_of(app), revoked)[0] == 401


def test_a_log_in_form_without_its_cookie_value_is_refused(app: Flask) -> None:
    client = client_of(app)
    client.get("/console/login", base_url=BASE)
    form = {"csrf_token": "guessed", "token": make_token(app, Scope.ADMIN)}
    answer = client.post("/console/login", base_url=BASE, data=form)
    assert answer.status_code == 403 and "log in again" in answer.text
    assert client.get_cookie(SESSION_COOKIE, domain="localhost") is None


def test_a_session_ends_when_idle_and_at_its_lifetime(app: Flask, clock: Clock) -> None:
    client = admin_client(app)
    clock.now += defaults.CONSOLE_SESSION_IDLE - 1
    assert client.get("/console/", base_url=BASE).status_code == 200  # use restarts idle time
    clock.now += defaults.CONSOLE_SESSION_IDLE - 1
    assert client.get("/console/", base_url=BASE).status_code == 200
    clock.now += defaults.CONSOLE_SESSION_IDLE
    assert client.get("/console/", base_url=BASE).status_code == 303

    client = admin_client(app)
    start = clock.now
    while clock.now + defaults.CONSOLE_SESSION_IDLE / 2 < start + defaults.CONSOLE_SESSION_MAX:
        clock.now += defaults.CONSOLE_SESSION_IDLE / 2
        assert client.get("/console/agents", base_url=BASE).status_code == 200
    clock.now = start + defaults.CONSOLE_SESSION_MAX
    assert client.get("/console/agents", base_url=BASE).status_code == 303


def test_revoking_the_token_ends_its_sessions(app: Flask, clock: Clock) -> None:
    token = make_token(app, Scope.OPERATOR, "viewer")
    client = client_of(app)
    log_in(client, token)
    assert client.get("/console/", base_url=BASE).status_code == 200
    broker_of(app).store.revoke_token(token.split("_")[1], clock.now)
    assert client.get("/console/", base_url=BASE).status_code == 303


def test_log_out_ends_the_session_on_the_server(app: Flask) -> None:
    client = admin_client(app)
    session_id = client.get_cookie(SESSION_COOKIE, domain="localhost")
    assert session_id is not None
    page = client.get("/console/", base_url=BASE).text
    answer = client.post("/console/logout", base_url=BASE, data={"csrf_token": hidden(page)})
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/login"
    replay = client_of(app)
    replay.set_cookie(SESSION_COOKIE, session_id.value, domain="localhost", secure=True)
    assert replay.get("/console/", base_url=BASE).status_code == 303


def test_the_store_keeps_no_session_id_in_clear(app: Flask, tmp_path: Path) -> None:
    client = admin_client(app)
    cookie = client.get_cookie(SESSION_COOKIE, domain="localhost")
    assert cookie is not None and len(cookie.value) >= 43  # 32 random bytes, URL-safe
    store = broker_of(app).store
    assert isinstance(store, SQLiteStore)
    store.close()  # the WAL folded into the file: every byte the broker wrote is there
    held = b"".join(p.read_bytes() for p in tmp_path.glob("broker.sqlite3*"))
    assert cookie.value.encode() not in held
    assert session_hash(cookie.value).encode() in held


def test_a_session_made_by_one_app_is_live_on_another_on_the_same_store(tmp_path: Path,
                                                                       clock: Clock) -> None:
    config = BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1")
    first = create_app(config, housekeeping=False, clock=clock)
    client = admin_client(first)
    page = client.get("/console/", base_url=BASE).text
    second = create_app(config, housekeeping=False, clock=clock)  # a restart, or a 2nd instance
    cookie = client.get_cookie(SESSION_COOKIE, domain="localhost")
    assert cookie is not None
    other = client_of(second)
    other.set_cookie(SESSION_COOKIE, cookie.value, domain="localhost", secure=True)
    assert other.get("/console/", base_url=BASE).status_code == 200
    answer = other.post("/console/logout", base_url=BASE, data={"csrf_token": hidden(page)})
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/login"
    assert client.get("/console/", base_url=BASE).status_code == 303


def cookie_hash(client: FlaskClient) -> str:
    cookie = client.get_cookie(SESSION_COOKIE, domain="localhost")
    assert cookie is not None
    return session_hash(cookie.value)


def test_housekeeping_removes_the_rows_of_ended_sessions(app: Flask, clock: Clock) -> None:
    idle, kept = admin_client(app), admin_client(app)
    store = broker_of(app).store
    clock.now += defaults.CONSOLE_SESSION_IDLE - 120
    assert kept.get("/console/", base_url=BASE).status_code == 200  # its use is recorded
    clock.now += 120
    housekeeping.run_once(broker_of(app), clock.now)
    assert store.get_session(cookie_hash(idle)) is None
    assert store.get_session(cookie_hash(kept)) is not None
    clock.now += defaults.CONSOLE_SESSION_IDLE
    housekeeping.run_once(broker_of(app), clock.now)
    assert store.get_session(cookie_hash(kept)) is None


# --- CSRF and who may change what --------------------------------------------------------


def test_cancel_needs_the_sessions_csrf_token_and_an_admin(app: Flask) -> None:
    job_id = add_job(app, created=999_000.0)
    client = admin_client(app)
    page = client.get(f"/console/jobs/{job_id}", base_url=BASE).text
    assert 'id="cancel"' in page
    for form in ({}, {"csrf_token": ""}, {"csrf_token": "x" * 43}):
        answer = client.post(f"/console/jobs/{job_id}/cancel", base_url=BASE, data=form)
        assert answer.status_code == 403 and "CSRF token is missing or wrong" in answer.text
    assert broker_of(app).store.get_job(job_id).state is State.QUEUED  # type: ignore[union-attr]

    viewer = client_of(app)
    log_in(viewer, make_token(app, Scope.OPERATOR, "viewer"))
    page = viewer.get(f"/console/jobs/{job_id}", base_url=BASE).text
    assert 'id="cancel"' not in page
    answer = viewer.post(f"/console/jobs/{job_id}/cancel", base_url=BASE,
                         data={"csrf_token": hidden(page)})  # fmt: skip
    assert answer.status_code == 403 and "needs an admin token" in answer.text
    assert viewer.get("/console/tokens", base_url=BASE).status_code == 403

    admin_page = client.get(f"/console/jobs/{job_id}", base_url=BASE).text
    answer = client.post(f"/console/jobs/{job_id}/cancel", base_url=BASE,
                         data={"csrf_token": hidden(admin_page)})  # fmt: skip
    assert answer.status_code == 303
    assert broker_of(app).store.get_job(job_id).state is State.CANCELLED  # type: ignore[union-attr]


def test_a_post_without_a_session_is_refused_not_redirected(app: Flask) -> None:
    job_id = add_job(app, created=999_000.0)
    answer = client_of(app).post(f"/console/jobs/{job_id}/cancel", base_url=BASE, data={})
    assert answer.status_code == 403 and "log in again" in answer.text


def test_a_created_token_is_shown_once_and_only_its_hash_kept(app: Flask) -> None:
    client = admin_client(app)
    page = client.get("/console/tokens", base_url=BASE).text
    answer = client.post("/console/tokens", base_url=BASE, data={
        "csrf_token": hidden(page), "scope": "site", "subject": "rme-u-tokyo", "expires": "30d"})
    token = re.search(r'id="new-token">(mbt_[^<]+)<', answer.text)
    assert answer.status_code == 200 and token is not None
    assert answer.headers["Cache-Control"] == "no-store"
    token_id = token.group(1).split("_")[1]
    record = broker_of(app).store.get_token(token_id)
    assert record is not None and record.scope is Scope.SITE and record.subject == "rme-u-tokyo"
    assert token.group(1) not in repr(record)
    listing = client.get("/console/tokens", base_url=BASE).text
    assert token_id in listing and token.group(1) not in listing

    bad = client.post("/console/tokens", base_url=BASE, data={
        "csrf_token": hidden(page), "scope": "site", "subject": "", "expires": ""})
    assert bad.status_code == 400 and "needs a name" in bad.text
    bad = client.post("/console/tokens", base_url=BASE, data={
        "csrf_token": hidden(page), "scope": "client", "subject": "n", "expires": "yesterday"})
    assert bad.status_code == 400 and "<strong>expires</strong>" in bad.text


# --- pages -------------------------------------------------------------------------------


def test_network_text_is_escaped_on_every_page(app: Flask) -> None:
    job_id = add_job(app, created=999_000.0, name=HOSTILE)
    broker = broker_of(app)
    broker.files.create_job_dir(job_id)
    with broker.files.open_for_write(job_id, "logs", "stdout", 0) as out:
        out.write(b"<script>alert(1)</script>\n")
    client = admin_client(app)
    for path in ("/console/jobs", f"/console/jobs/{job_id}"):
        page = client.get(path, base_url=BASE).text
        assert HOSTILE not in page and "<script>alert(1)" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
        assert len(re.findall(r"<script\b", page)) == 1  # the refresh script, nothing else


def test_every_page_forbids_foreign_scripts_framing_and_caching(app: Flask) -> None:
    client = admin_client(app)
    for path in ("/console/", "/console/jobs", "/console/sites", "/console/agents",
                 "/console/tokens", "/console/login"):  # fmt: skip
        answer = client.get(path, base_url=BASE)
        assert answer.status_code == 200, path
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"


def test_the_job_list_pages_by_keyset_and_filters(app: Flask) -> None:
    made = [add_job(app, "s1" if n % 2 else "s2", created=900_000.0 + n,
                    command="creep" if n % 5 == 0 else "fatigue") for n in range(120)]  # fmt: skip
    client = admin_client(app)
    seen: list[str] = []
    path = "/console/jobs?site=s1"
    while path:
        page = client.get(path, base_url=BASE).text
        seen += re.findall(r'data-job="([0-9a-f-]{36})"', page)
        found = re.search(r'href="([^"]+)" id="next-page"', page)
        path = found.group(1).replace("&amp;", "&") if found else ""
    assert seen == [j for n, j in reversed(list(enumerate(made))) if n % 2]
    page = client.get("/console/jobs?command=creep&since=1970-01-11T10:01:00", base_url=BASE)
    since = 900_060.0  # 1970-01-11T10:01:00 UTC: the jobs from n = 60 on
    wanted = [j for n, j in reversed(list(enumerate(made)))
              if n % 5 == 0 and 900_000.0 + n >= since]  # fmt: skip
    assert re.findall(r'data-job="([0-9a-f-]{36})"', page.text) == wanted and len(wanted) == 12


@pytest.mark.parametrize(("query", "field"), [
    ("state=done", "state"), ("site=a%20b", "site"), ("since=tomorrow", "since"),
    ("before=12_notajob", "before"), ("before=nan_" + str(uuid.UUID(int=4, version=4)), "before"),
    ("since=2026-12-02&until=2026-12-01", "since"),
])  # fmt: skip
def test_a_bad_filter_is_named_with_its_fix(app: Flask, query: str, field: str) -> None:
    answer = admin_client(app).get(f"/console/jobs?{query}", base_url=BASE)
    assert answer.status_code == 400
    assert f"<strong>{field}</strong>" in answer.text


def test_the_log_tail_starts_at_a_whole_line(app: Flask) -> None:
    job_id = add_job(app, created=999_000.0)
    broker = broker_of(app)
    broker.files.create_job_dir(job_id)
    lines = b"".join(f"line {n:06d}\n".encode() for n in range(20_000))
    with broker.files.open_for_write(job_id, "logs", "stdout", 0) as out:
        out.write(lines)
    broker.store.claim("s1", "a1", 60, 999_001.0)
    job = broker.store.get_job(job_id)
    assert job is not None
    broker.store.append_log(job_id, "stdout", job.lease_epoch, 0, len(lines), 999_002.0)
    page = admin_client(app).get(f"/console/jobs/{job_id}", base_url=BASE).text
    log = re.search(r'id="log-stdout">([^<]*)</pre>', page)
    assert log is not None and "the end only" in page
    shown = log.group(1).splitlines()
    assert shown[-1] == "line 019999" and re.fullmatch(r"line \d{6}", shown[0])
    assert len("\n".join(shown)) <= defaults.CONSOLE_LOG_TAIL


# --- pure parts --------------------------------------------------------------------------


def test_times_durations_and_sizes_are_written_one_way() -> None:
    assert display.utc(0.0) == "1970-01-01 00:00:00"
    assert display.utc(None) == "-"
    assert [display.duration(s) for s in (2.25, 59, 61, 7322, 3 * 86400 + 3600)] == [
        "2.2 s", "59 s", "1 min 1 s", "2 h 2 min", "3 d 1 h"]  # fmt: skip
    assert [display.size(n) for n in (0, 1023, 1024, 5 << 20)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 MiB"]  # fmt: skip


def test_a_cursor_round_trips_exactly() -> None:
    job_id = str(uuid.uuid4())
    created = 1764763200.123456789
    parsed = filters.parse_cursor(f"{created!r}_{job_id}")
    assert parsed == (created, job_id)
    with pytest.raises(InvalidField):
        filters.parse_cursor(f"inf_{job_id}")
