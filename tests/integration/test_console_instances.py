"""The web console on two broker instances over one PostgreSQL database, behind a real HAProxy:
a session opened through the load balancer is live on each instance, its CSRF token made on
one is accepted by the other, a log-out on one ends it on the other, and a revoked token ends
its sessions everywhere.

Real parts only: PostgreSQL (``tests.support.postgres``), two brokers under gunicorn with TLS
(``tests.support.broker``), HAProxy with health checks (``tests.support.haproxy``); the
browser is ``requests`` with its cookie jar (the pages need no script). Cookies are host-only
for 127.0.0.1 and not bound to a port, so one jar reaches HAProxy and each instance directly,
as one browser would reach them under one host name. With CI=true these tests fail, not skip,
when PostgreSQL or HAProxy cannot start.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.broker import BrokerProcess, BrokerUnavailable, start_broker
from tests.support.haproxy import Backend, HAProxy, HAProxyUnavailable, haproxy_binary
from tests.support.haproxy import start_haproxy as _start_haproxy
from tests.support.postgres import PostgresUnavailable, start_postgres
from tests.support.services import unavailable

__all__ = ["haproxy_binary"]  # a fixture used here by name

SESSION_COOKIE = "__Host-mint_console"
LOGGED_IN = re.compile(r'<span class="who">(\w+): ([^<]*)</span>')


@dataclass
class Pair:
    a: BrokerProcess
    b: BrokerProcess
    haproxy: HAProxy

    def url(self, where: str) -> tuple[str, str]:
        """Base URL and CA bundle of ``a``, ``b`` or ``haproxy``."""
        if where == "haproxy":
            return self.haproxy.url, str(self.haproxy.ca_bundle)
        broker = self.a if where == "a" else self.b
        return broker.url, str(broker.ca_bundle)


def _postgres_url(stack: list[Callable[[], None]]) -> str:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[test]')")
    try:
        pg = start_postgres()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"PostgreSQL could not start: {exc}")
    stack.append(pg.stop)
    return pg.new_database("console")


def _broker(root: Path, url: str, shared: Path, *, start: bool = True) -> BrokerProcess:
    return start_broker(root, storage=f'store = "{url}"', data_dir=shared, threads=24,
                        start=start)  # fmt: skip


@pytest.fixture(scope="module")
def pair(haproxy_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("console-pair")
    stack: list[Callable[[], None]] = []
    try:
        db_url = _postgres_url(stack)
        a = _broker(root / "a", db_url, root / "shared", start=False)
        migrated = a.cli("migrate")
        assert migrated.returncode == 0, migrated.stderr
        a.start()
        stack.append(a.stop)
        b = _broker(root / "b", db_url, root / "shared")
        stack.append(b.stop)
        try:
            proxy = _start_haproxy(haproxy_binary, root / "haproxy",
                                   [Backend("a", a.port, a.ca_bundle),
                                    Backend("b", b.port, b.ca_bundle)])  # fmt: skip
        except HAProxyUnavailable as exc:
            unavailable(f"HAProxy could not start: {exc}")
        stack.append(proxy.stop)
        for name in ("a", "b"):
            proxy.wait_state(name, "UP")
        yield Pair(a, b, proxy)
    except BrokerUnavailable as exc:
        unavailable(f"a broker could not start: {exc}")
    finally:
        for undo in reversed(stack):
            undo()


def get(pair: Pair, browser: requests.Session, where: str, path: str) -> requests.Response:
    base, ca = pair.url(where)
    return browser.get(f"{base}{path}", verify=ca, allow_redirects=False, timeout=30)


def post(pair: Pair, browser: requests.Session, where: str, path: str,
         form: dict[str, str]) -> requests.Response:  # fmt: skip
    base, ca = pair.url(where)
    return browser.post(f"{base}{path}", data=form, verify=ca, allow_redirects=False, timeout=30)


def hidden(page: str, name: str = "csrf_token") -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match is not None, page[:2000]
    return match.group(1)


def log_in(pair: Pair, token: str, where: str = "haproxy") -> requests.Session:
    browser = requests.Session()
    form = get(pair, browser, where, "/console/login")
    assert form.status_code == 200, form.text[:500]
    answer = post(pair, browser, where, "/console/login",
                  {"csrf_token": hidden(form.text), "token": token, "next": ""})  # fmt: skip
    assert answer.status_code == 303, answer.text[:2000]
    assert answer.headers["Location"] == "/console/"
    cookie = next(c for c in browser.cookies if c.name == SESSION_COOKIE)
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    return browser


def who(pair: Pair, browser: requests.Session, where: str) -> tuple[int, str]:
    """The status of the overview on ``where`` and, when logged in, "scope: subject"."""
    answer = get(pair, browser, where, "/console/")
    if answer.status_code != 200:
        return answer.status_code, answer.headers.get("Location", "")
    match = LOGGED_IN.search(answer.text)
    assert match is not None, answer.text[:2000]
    return 200, f"{match.group(1)}: {match.group(2)}"


def replay(session_id: str) -> requests.Session:
    """A second browser holding only a copied session cookie."""
    browser = requests.Session()
    browser.cookies.set(SESSION_COOKIE, session_id, domain="127.0.0.1", path="/", secure=True)
    return browser


def session_id(browser: requests.Session) -> str:
    value = browser.cookies.get(SESSION_COOKIE)
    assert value, "no session cookie"
    return str(value)


def token_id(token: str) -> str:
    return token.split("_")[1]


def test_a_session_made_through_haproxy_is_live_on_each_instance(pair: Pair) -> None:
    browser = log_in(pair, pair.a.token("operator", "night-shift"))
    for where in ("a", "b", "haproxy", "b", "a"):
        assert who(pair, browser, where) == (200, "operator: night-shift"), where


def test_a_csrf_token_made_on_one_instance_is_accepted_on_the_other(pair: Pair) -> None:
    browser = log_in(pair, pair.a.token("admin"))
    form = get(pair, browser, "a", "/console/tokens")
    assert form.status_code == 200
    csrf = hidden(form.text)
    refused = post(pair, browser, "b", "/console/tokens",
                   {"csrf_token": "made-up", "scope": "operator", "subject": "x"})  # fmt: skip
    assert refused.status_code == 403 and "CSRF token is missing or wrong" in refused.text
    made = post(pair, browser, "b", "/console/tokens",
                {"csrf_token": csrf, "scope": "operator", "subject": "day-shift"})  # fmt: skip
    assert made.status_code == 200, made.text[:2000]
    token = re.search(r'<pre class="token" id="new-token">([^<]+)</pre>', made.text)
    assert token is not None, made.text[:2000]
    # The token made through instance b opens a session through instance a.
    assert who(pair, log_in(pair, token.group(1), "a"), "a") == (200, "operator: day-shift")


def test_a_log_out_on_one_instance_ends_the_session_on_the_other(pair: Pair) -> None:
    browser = log_in(pair, pair.a.token("operator", "early-shift"))
    held = session_id(browser)
    assert who(pair, replay(held), "a") == (200, "operator: early-shift")
    page = get(pair, browser, "a", "/console/")
    out = post(pair, browser, "b", "/console/logout", {"csrf_token": hidden(page.text)})
    assert out.status_code == 303 and out.headers["Location"] == "/console/login"
    for where in ("a", "b", "haproxy"):
        assert who(pair, replay(held), where) == (303, "/console/login?next=/console/"), where


def test_a_revoked_token_ends_its_sessions_on_both_instances(pair: Pair) -> None:
    token = pair.b.token("operator", "late-shift")
    on_a, on_b = log_in(pair, token, "a"), log_in(pair, token, "b")
    other = log_in(pair, pair.a.token("operator", "night-shift"), "b")
    for browser in (on_a, on_b):
        assert {who(pair, browser, w) for w in ("a", "b")} == {(200, "operator: late-shift")}
    admin = log_in(pair, pair.a.token("admin"), "a")
    page = get(pair, admin, "a", "/console/tokens")
    revoked = post(pair, admin, "b", f"/console/tokens/{token_id(token)}/revoke",
                   {"csrf_token": hidden(page.text)})  # fmt: skip
    assert revoked.status_code == 303, revoked.text[:2000]
    for browser in (on_a, on_b):
        for where in ("a", "b"):
            assert who(pair, browser, where)[0] == 303, where
    assert who(pair, other, "a") == (200, "operator: night-shift")  # another token's: kept


def test_a_token_revoked_by_the_cli_ends_its_sessions_at_the_next_request(pair: Pair) -> None:
    token = pair.a.token("operator", "cli-shift")
    browser = log_in(pair, token, "b")
    assert who(pair, browser, "a") == (200, "operator: cli-shift")
    done = pair.b.cli("token", "revoke", token_id(token))
    assert done.returncode == 0, done.stderr
    assert who(pair, replay(session_id(browser)), "a")[0] == 303
    assert who(pair, replay(session_id(browser)), "b")[0] == 303
