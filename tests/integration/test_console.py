"""The broker's web console in a real headless Chromium, against a real broker (gunicorn, TLS
from a throwaway CA, the browser pinned to its key) and a real agent process.

Each page's content is checked against the store: the admin API's answers and, for the job
timeline, the broker's SQLite store opened read-only beside the running broker. A screenshot
of each page is saved under ``test-artifacts/console/``. With CI=true a browser that cannot
start fails these tests (``tests.support.browser``).
"""

from __future__ import annotations

import datetime
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from bridge import __version__
from broker.config import load_config
from broker.store import Store
from broker.store.locations import open_store
from tests.integration.test_broker_api import Api, sha, upload
from tests.support.broker import BrokerFactory, BrokerProcess
from tests.support.browser import screenshot, start_chromium
from tests.support.pull import (
    FINAL,
    PROGRAMS,
    Agent,
    make_site,
    start_agent,
    wait_until,
)
from tests.support.site_toml import write_site_toml

SITE = "console-site"  # has a real agent
IDLE = "console-idle"  # has a site token but no agent: its jobs stay queued
IDLE_JOBS = 57  # more than one page (50) of the console's job list
HOSTILE_NAME = '<script>window.__pwned = "name"; alert("name")</script>'
HOSTILE_FILE = "<svg onload=alert(1)>.txt"
ART = "console"
SESSION = "__Host-mint_console"


# --- services ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory("console-broker", jobs='lease_ttl = "10s"')


@pytest.fixture(scope="module")
def api(broker: BrokerProcess) -> Api:
    return Api(broker)


@pytest.fixture(scope="module")
def agent(broker: BrokerProcess, api: Api, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Agent]:  # fmt: skip
    site = make_site(broker, tmp_path_factory.mktemp("console") / "site", SITE)
    prog = PROGRAMS / "testprog.py"
    config = write_site_toml(
        site.root / "agent.toml",
        site={"name": SITE, "work_base": site.work_base, "log_file": site.root / "site.log"},
        agent={"url": broker.url, "ca_bundle": broker.ca_bundle, "token_file": site.token_file,
               "agent_id": "console-agent", "max_jobs": 4, "lease_renew": "3s"},
        commands={
            "markup": {"program": prog, "args": ["markup"]},
            "fail": {"program": prog, "args": ["exit", "3"]},
            "ticks": {"program": prog, "args": ["ticks", "600", "0.1"]},
        },
    )  # fmt: skip
    running = start_agent(config)
    admin = broker.token("admin")
    wait_until(lambda: any(a["agent_id"] == "console-agent"
                           for a in api("GET", "/api/v1/admin/agents", admin).json()["agents"]),
               "the agent's first poll")  # fmt: skip
    yield running
    assert running.stop() == 0, running.text()


@pytest.fixture(scope="module")
def store(broker: BrokerProcess) -> Iterator[Store]:
    """The running broker's SQLite store, for what only the store knows (the timeline)."""
    opened = open_store(load_config(str(broker.config_path)).store)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def browser(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[webdriver.Chrome]:  # fmt: skip
    chromium = start_chromium(tmp_path_factory.mktemp("chromium"), broker.root / "server.pem")
    yield chromium
    chromium.quit()


@dataclass
class Jobs:
    idle: list[str]  # oldest first
    markup: str
    failed: str


def new_job(api: Api, token: str, site: str, command: str, **extra: Any) -> str:
    data = f"input of a {command} job\n".encode()
    inputs = [{"name": "in.txt", "size": len(data), "sha256": sha(data)}]
    body = {"job_id": str(uuid.uuid4()), "site": site, "command": command, "inputs": inputs,
            **extra}  # fmt: skip
    answer = api("POST", "/api/v1/jobs", token, json=body)
    assert answer.status_code == 201, answer.text
    upload(api, token, body["job_id"], "in.txt", data)
    answer = api("POST", f"/api/v1/jobs/{body['job_id']}/submit", token)
    assert answer.status_code == 200, answer.text
    return str(body["job_id"])


def final(api: Api, token: str, job_id: str) -> dict[str, Any]:
    def ended() -> bool:
        return api("GET", f"/api/v1/jobs/{job_id}", token).json()["state"] in FINAL

    wait_until(ended, f"job {job_id} to end", 120)
    return dict(api("GET", f"/api/v1/jobs/{job_id}", token).json())


@pytest.fixture(scope="module")
def jobs(broker: BrokerProcess, api: Api, agent: Agent) -> Jobs:
    broker.token("site", IDLE)  # the site exists: jobs for it may be created
    clients = [broker.token("client", "node-a"), broker.token("client", "node-b")]
    idle = [new_job(api, clients[n % 2], IDLE, "creep" if n % 3 == 0 else "fatigue")
            for n in range(IDLE_JOBS)]  # fmt: skip
    markup = new_job(api, clients[0], SITE, "markup", metadata={"name": HOSTILE_NAME})
    failed = new_job(api, clients[1], SITE, "fail")
    assert final(api, clients[0], markup)["state"] == "finished"
    assert final(api, clients[1], failed)["outcome"]["exit_code"] == 3
    return Jobs(idle, markup, failed)


# --- the browser -------------------------------------------------------------------------


def click(browser: webdriver.Chrome, element: WebElement) -> None:
    """Click what leads to another page, and wait until that page has replaced this one.

    The old page is marked with a window property that a new document does not have. Waiting
    for its <html> element to go stale instead races Chromium: asking about a node of a
    document being torn down can fail with an inspector error rather than a stale element.
    """
    browser.execute_script("window.__mintBridgeOldPage = true;")
    element.click()
    # A script run while the old document unloads may fail; that is not yet the new page.
    WebDriverWait(browser, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda b: b.execute_script(
            "return window.__mintBridgeOldPage === undefined"
            " && document.readyState === 'complete'"))


def log_in(browser: webdriver.Chrome, broker: BrokerProcess, token: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{broker.url}/console/login")
    browser.find_element(By.NAME, "token").send_keys(token)
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.login button"))


def rows(browser: webdriver.Chrome, table: str, key: str) -> dict[str, list[str]]:
    """The table's rows by their data-<key> attribute, as the cells' texts."""
    found = {}
    for row in browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr[data-{key}]"):
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        found[str(row.get_attribute(f"data-{key}"))] = cells
    return found


def job_ids(browser: webdriver.Chrome) -> list[str]:
    found = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-job]")
    return [str(row.get_attribute("data-job")) for row in found]


def admin_jobs(api: Api, broker: BrokerProcess, **filters: str) -> list[dict[str, Any]]:
    answer = api("GET", "/api/v1/admin/jobs", broker.token("admin"), params=filters)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["jobs"])


def session_cookie(browser: webdriver.Chrome) -> str:
    cookie = browser.get_cookie(SESSION)
    assert cookie is not None, browser.get_cookies()
    return str(cookie["value"])


def as_png(path: Path) -> Path:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    return path


def no_alert(browser: webdriver.Chrome) -> None:
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.accept()


# --- log-in ------------------------------------------------------------------------------


def test_client_site_and_wrong_tokens_never_open_the_console(
    browser: webdriver.Chrome, broker: BrokerProcess
) -> None:
    for token, says in [(broker.token("client", "node-a"), "a client token does not open"),
                        (broker.token("site", SITE), "a site token does not open"),
                        ("mbt_000000000000_" + "x" * 40, "not known to this broker"),
                        ("not-a-token", "malformed")]:  # fmt: skip
        log_in(browser, broker, token)
        assert browser.find_element(By.ID, "error").text.lower().count(says.lower()) == 1, says
        assert browser.current_url.startswith(f"{broker.url}/console/login")
        assert browser.get_cookie(SESSION) is None
    as_png(screenshot(browser, ART, "login-refused"))
    browser.get(f"{broker.url}/console/jobs")  # still no way in
    assert browser.current_url.startswith(f"{broker.url}/console/login?next=")


def test_an_admin_log_in_gives_a_strict_http_only_secure_session_cookie(
    browser: webdriver.Chrome, broker: BrokerProcess
) -> None:
    browser.delete_all_cookies()
    browser.get(f"{broker.url}/console/sites")
    assert "/console/login?next=" in browser.current_url
    as_png(screenshot(browser, ART, "login"))
    browser.find_element(By.NAME, "token").send_keys(broker.token("admin"))
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.login button"))
    assert browser.current_url == f"{broker.url}/console/sites"  # back where it was sent from
    cookie = browser.get_cookie(SESSION)
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
    assert browser.execute_script("return document.cookie") == ""  # no script can read it
    assert broker.token("admin") not in browser.page_source


# --- pages against the store -------------------------------------------------------------


def test_overview_sites_and_agents_match_the_store(
    browser: webdriver.Chrome, broker: BrokerProcess, api: Api, jobs: Jobs
) -> None:
    admin = broker.token("admin")
    queues = {q["site"]: q for q in api("GET", "/api/v1/admin/queues", admin).json()["sites"]}
    agents = api("GET", "/api/v1/admin/agents", admin).json()["agents"]
    day_ago = time.time() - 86400
    failed = [j for j in admin_jobs(api, broker, site=SITE)
              if j["outcome"] and j["outcome"]["state"] != "completed"
              and j["updated_at"] >= day_ago]  # fmt: skip
    assert [j["job_id"] for j in failed] == [jobs.failed]
    log_in(browser, broker, admin)
    queued = sum(q["queued"] for q in queues.values())
    assert browser.find_element(By.ID, "queued").text == str(queued)
    assert browser.find_element(By.ID, "failures").text == "1"
    assert browser.find_element(By.ID, "version").text == __version__
    assert browser.find_element(By.ID, "store").text.startswith("sqlite, ")
    sites = rows(browser, "sites", "site")
    assert sites[IDLE][1:2] == ["0"] and sites[IDLE][3] == str(IDLE_JOBS)
    assert sites[SITE][1] == "1" and sites[SITE][6] == "1"
    assert sites[IDLE][3] == str(queues[IDLE]["queued"])
    as_png(screenshot(browser, ART, "overview"))

    click(browser, browser.find_element(By.LINK_TEXT, "Sites"))
    sites = rows(browser, "sites", "site")
    assert sites[IDLE][:3] == [IDLE, "yes", "0 of 0"] and sites[IDLE][4] == str(IDLE_JOBS)
    assert sites[SITE][2] == "1 of 1" and sites[SITE][8] == "1"
    as_png(screenshot(browser, ART, "sites"))

    click(browser, browser.find_element(By.LINK_TEXT, "Agents"))
    shown = rows(browser, "agents", "agent")
    assert set(shown) == {a["agent_id"] for a in agents} == {"console-agent"}
    assert shown["console-agent"][:3] == [SITE, "console-agent", "online"]
    last_seen = agents[0]["last_seen"]
    written = datetime.datetime.fromtimestamp(last_seen, datetime.UTC)
    # The page and the store agree to the second (the agent may poll between the two reads).
    shown_at = datetime.datetime.strptime(shown["console-agent"][3], "%Y-%m-%d %H:%M:%S")
    assert abs(shown_at.replace(tzinfo=datetime.UTC).timestamp() - written.timestamp()) < 30
    as_png(screenshot(browser, ART, "agents"))


def test_jobs_filters_and_keyset_pages_match_the_store(
    browser: webdriver.Chrome, broker: BrokerProcess, api: Api, jobs: Jobs
) -> None:
    log_in(browser, broker, broker.token("admin"))
    browser.get(f"{broker.url}/console/jobs")
    browser.find_element(By.CSS_SELECTOR, "#filters input[name=site]").send_keys(IDLE)
    click(browser, browser.find_element(By.CSS_SELECTOR, "#filters button"))
    assert "site=console-idle" in browser.current_url
    first = job_ids(browser)
    as_png(screenshot(browser, ART, "jobs"))
    click(browser, browser.find_element(By.ID, "next-page"))
    second = job_ids(browser)
    assert browser.find_elements(By.ID, "next-page") == []
    assert len(first) == 50 and len(second) == IDLE_JOBS - 50
    newest_first = [j["job_id"] for j in admin_jobs(api, broker, site=IDLE)]
    assert first + second == newest_first == list(reversed(jobs.idle))

    wanted = [j for j in admin_jobs(api, broker, site=IDLE)
              if j["client"] == "node-b" and j["command"] == "creep"]  # fmt: skip
    browser.get(f"{broker.url}/console/jobs?site={IDLE}&client=node-b&command=creep&state=queued")
    assert job_ids(browser) == [j["job_id"] for j in wanted] and wanted
    table = rows(browser, "jobs", "job")
    assert {tuple(table[j["job_id"]][2:6]) for j in wanted} == {(IDLE, "node-b", "creep", "queued")}

    cut = admin_jobs(api, broker, site=IDLE)[20]["created_at"]
    since = datetime.datetime.fromtimestamp(cut, datetime.UTC).replace(tzinfo=None)
    since_text = since.isoformat(timespec="microseconds")
    bound = since.replace(tzinfo=datetime.UTC).timestamp()
    browser.get(f"{broker.url}/console/jobs?site={IDLE}&since={since_text}")
    expected = [j["job_id"] for j in admin_jobs(api, broker, site=IDLE) if j["created_at"] >= bound]
    assert job_ids(browser) == expected and 15 <= len(expected) <= 25

    browser.get(f"{broker.url}/console/jobs?state=finished&site={SITE}")
    finished = rows(browser, "jobs", "job")
    assert set(finished) == {jobs.markup, jobs.failed}
    assert finished[jobs.failed][8] == "3"  # the exit code column

    browser.get(f"{broker.url}/console/jobs?since=yesterday")
    assert browser.find_element(By.ID, "error").text.startswith("since:")
    assert "2026-12-01T08:30" in browser.find_element(By.ID, "error").text


def test_the_job_page_shows_the_timeline_files_and_log_of_the_store(
    browser: webdriver.Chrome, broker: BrokerProcess, api: Api, jobs: Jobs, store: Store
) -> None:
    log_in(browser, broker, broker.token("admin"))
    browser.get(f"{broker.url}/console/jobs/{jobs.failed}")
    record = store.get_job(jobs.failed)
    assert record is not None
    assert browser.find_element(By.ID, "state").text == "finished"
    assert browser.find_element(By.ID, "exit-code").text == "3"
    assert browser.find_element(By.ID, "agent").text == "console-agent"
    assert browser.find_element(By.ID, "lease").text.startswith(f"epoch {record.lease_epoch}")
    timeline = [[c.text for c in r.find_elements(By.TAG_NAME, "td")]
                for r in browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")]  # fmt: skip
    events = store.job_events(jobs.failed)
    assert [row[1] for row in timeline] == [e.state.value for e in events]
    assert {"created", "queued", "claimed", "running", "finished"} <= {row[1] for row in timeline}
    inputs = browser.find_element(By.ID, "inputs").text
    assert record.inputs[0].sha256 in inputs and "in.txt" in inputs
    stdout = api("GET", f"/api/v1/jobs/{jobs.failed}/logs/stdout", broker.token("admin"))
    assert browser.find_element(By.ID, "log-stdout").text == stdout.text.strip() == "about to fail"
    assert browser.find_element(By.ID, "log-stderr").text == "failure detail"
    assert browser.find_elements(By.ID, "cancel") == []  # an ended job has no cancel button
    as_png(screenshot(browser, ART, "job"))


def test_markup_in_a_job_name_a_log_line_and_a_file_name_is_rendered_inert(
    browser: webdriver.Chrome, broker: BrokerProcess, api: Api, jobs: Jobs, store: Store
) -> None:
    log_in(browser, broker, broker.token("operator", "console-viewer"))
    for path in (f"/console/jobs?site={SITE}", f"/console/jobs/{jobs.markup}"):
        browser.get(broker.url + path)
        no_alert(browser)
        assert browser.execute_script("return window.__pwned === undefined") is True, path
        scripts = browser.execute_script(
            "return Array.from(document.scripts).map(s => s.src)")
        assert scripts == [f"{broker.url}/console/static/refresh.js"], path
        assert browser.find_elements(By.TAG_NAME, "svg") == []
        assert browser.find_elements(By.CSS_SELECTOR, "img") == []
    assert browser.find_element(By.ID, "job-name").text == HOSTILE_NAME
    log_text = browser.find_element(By.ID, "log-stdout").text
    assert '<script>window.__pwned = "log"; alert("log")</script>' in log_text
    assert "<img src=x onerror=\"window.__pwned='img'\"> & done" in log_text
    record = store.get_job(jobs.markup)
    assert record is not None
    result = record.result(HOSTILE_FILE)
    assert result is not None and result.sha256 == sha(b"markup result\n")
    results = browser.find_element(By.ID, "results").text
    assert HOSTILE_FILE in results and result.sha256 in results
    as_png(screenshot(browser, ART, "job-markup"))
    browser.get(f"{broker.url}/console/jobs?site={SITE}")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#jobs td.name")]
    assert HOSTILE_NAME in names


# --- changes: cancel, CSRF, tokens, log-out ------------------------------------------------


def test_cancel_from_the_job_page_reaches_the_agent(
    browser: webdriver.Chrome, broker: BrokerProcess, api: Api, agent: Agent, jobs: Jobs
) -> None:
    client = broker.token("client", "node-a")
    job_id = new_job(api, client, SITE, "ticks")
    wait_until(lambda: api("GET", f"/api/v1/jobs/{job_id}", client).json()["state"] == "running",
               "the ticks job to run")  # fmt: skip
    log_in(browser, broker, broker.token("admin"))
    browser.get(f"{broker.url}/console/jobs/{job_id}")
    assert browser.find_element(By.ID, "state").text == "running"
    as_png(screenshot(browser, ART, "job-running"))
    click(browser, browser.find_element(By.ID, "cancel"))
    assert browser.current_url == f"{broker.url}/console/jobs/{job_id}"  # back on the page
    doc = final(api, client, job_id)
    assert doc["state"] == "cancelled", doc
    wait_until(lambda: f"{job_id}: cancel requested" in agent.text(), "the agent's cancel line")
    browser.refresh()
    assert browser.find_element(By.ID, "state").text == "cancelled"
    timeline = browser.find_element(By.ID, "timeline").text
    assert "cancel" in timeline.split("running", 1)[1]  # the request, after it ran
    assert browser.find_elements(By.ID, "cancel") == []
    assert f"{job_id}: cancel requested from the console by admin:admin" in broker.log_tail(400)


def test_forms_without_the_sessions_csrf_token_are_refused(
    browser: webdriver.Chrome, broker: BrokerProcess, api: Api, jobs: Jobs
) -> None:
    target = jobs.idle[0]
    log_in(browser, broker, broker.token("admin"))
    browser.get(f"{broker.url}/console/jobs/{target}")
    browser.execute_script(
        "document.querySelector('#cancel-form input[name=csrf_token]').value = 'forged'")
    click(browser, browser.find_element(By.ID, "cancel"))
    assert "CSRF token is missing or wrong" in browser.find_element(By.ID, "error").text
    as_png(screenshot(browser, ART, "csrf-refused"))
    cookie = {"Cookie": f"{SESSION}={session_cookie(browser)}"}
    url = f"{broker.url}/console/jobs/{target}/cancel"
    for form in ({}, {"csrf_token": ""}, {"csrf_token": "x" * 43}):
        answer = requests.post(url, data=form, headers=cookie, verify=str(broker.ca_bundle),
                               allow_redirects=False, timeout=10)  # fmt: skip
        assert answer.status_code == 403 and "CSRF" in answer.text, form
    assert api("GET", f"/api/v1/jobs/{target}", broker.token("admin")).json()["state"] == "queued"

    log_in(browser, broker, broker.token("operator", "console-viewer"))
    browser.get(f"{broker.url}/console/jobs/{target}")
    assert browser.find_elements(By.ID, "cancel") == []  # operators only look
    csrf = browser.find_element(By.CSS_SELECTOR, "form.logout input[name=csrf_token]")
    answer = requests.post(
        url, data={"csrf_token": csrf.get_attribute("value")},
        headers={"Cookie": f"{SESSION}={session_cookie(browser)}"},
        verify=str(broker.ca_bundle), allow_redirects=False, timeout=10,
    )  # fmt: skip
    assert answer.status_code == 403 and "needs an admin token" in answer.text
    assert api("GET", f"/api/v1/jobs/{target}", broker.token("admin")).json()["state"] == "queued"
    browser.get(f"{broker.url}/console/tokens")
    assert "needs an admin token" in browser.find_element(By.ID, "error").text


def test_the_tokens_page_shows_a_new_token_once_and_revokes_it(
    browser: webdriver.Chrome, broker: BrokerProcess, api: Api, jobs: Jobs
) -> None:
    log_in(browser, broker, broker.token("admin"))
    browser.get(f"{broker.url}/console/tokens")
    listed = rows(browser, "tokens", "token")
    used = [cells for cells in listed.values() if cells[1:3] == ["client", "node-a"]]
    assert used and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", used[0][4])
    as_png(screenshot(browser, ART, "tokens"))
    form = browser.find_element(By.ID, "create-token")
    form.find_element(By.NAME, "subject").send_keys("grafana")
    form.find_element(By.NAME, "expires").send_keys("30d")
    click(browser, form.find_element(By.TAG_NAME, "button"))
    token = browser.find_element(By.ID, "new-token").text
    match = re.fullmatch(r"mbt_([0-9a-f]{12})_[A-Za-z0-9_-]+", token)
    assert match is not None, token
    scrape = requests.get(f"{broker.url}/metrics", headers={"Authorization": f"Bearer {token}"},
                          verify=str(broker.ca_bundle), timeout=10)  # fmt: skip
    assert scrape.status_code == 200
    browser.get(f"{broker.url}/console/tokens")
    assert token not in browser.page_source  # shown once, never again
    row = rows(browser, "tokens", "token")[match.group(1)]
    assert row[1:3] == ["operator", "grafana"] and row[5] == "active"
    revoke = f"tr[data-token='{match.group(1)}'] button"
    click(browser, browser.find_element(By.CSS_SELECTOR, revoke))
    assert rows(browser, "tokens", "token")[match.group(1)][5] == "revoked"
    scrape = requests.get(f"{broker.url}/metrics", headers={"Authorization": f"Bearer {token}"},
                          verify=str(broker.ca_bundle), timeout=10)  # fmt: skip
    assert scrape.status_code == 401


def test_log_out_and_revoking_the_token_end_the_session(
    browser: webdriver.Chrome, broker: BrokerProcess
) -> None:
    token = broker.token("operator", "console-leaver")
    log_in(browser, broker, token)
    old = {"Cookie": f"{SESSION}={session_cookie(browser)}"}
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.logout button"))
    assert browser.current_url == f"{broker.url}/console/login"
    assert browser.get_cookie(SESSION) is None
    answer = requests.get(f"{broker.url}/console/", headers=old, verify=str(broker.ca_bundle),
                          allow_redirects=False, timeout=10)  # fmt: skip
    assert answer.status_code == 303 and "/console/login" in answer.headers["Location"]

    log_in(browser, broker, token)
    assert browser.current_url == f"{broker.url}/console/"
    token_id = token.split("_")[1]
    done = broker.cli("token", "revoke", token_id)
    assert done.returncode == 0, done.stderr
    browser.get(f"{broker.url}/console/jobs")
    assert browser.current_url.startswith(f"{broker.url}/console/login")
