"""The original API (``/mi-distcomp-api/``) on the real broker (gunicorn, TLS from a throwaway
CA), driven by replays of the original clients (``tests/support/legacy_clients.py``), by a
real agent process, and by the new API, all on one job store.

Each scenario uses its own site name, so no other poller or agent can take its jobs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.support.broker import (
    BrokerFactory,
    BrokerProcess,
    BrokerUnavailable,
    start_broker,
    unavailable,
)
from tests.support.legacy_clients import STDERR_NAME, STDOUT_NAME, Poller, Workflow
from tests.support.site_toml import write_site_toml

PROGRAMS = Path(__file__).parent / "programs"
CALC = str(PROGRAMS / "legacy_calc.py")
MISSING = "出力指定ファイル({})がありませんでした。"
LEGACY = f"""
[legacy]
enabled = true
max_body = "1MiB"

[legacy.sites]
"legacy-a" = ["{CALC}"]
"legacy-b" = ["{CALC}"]
"legacy-race" = ["{CALC}"]
"legacy-kill" = ["{CALC}"]
"legacy-agent" = ["checksum", "fail", "not-at-the-site", "/opt/app/bin/checksum"]
"legacy-new" = ["{CALC}", "checksum"]
"legacy-shared" = ["{CALC}", "checksum"]
"""


@pytest.fixture(scope="module")
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory("legacy-broker", extra=LEGACY)


def http(broker: BrokerProcess, token: str | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(broker.ca_bundle)
    session.headers["Content-Type"] = "application/json"
    if token is not None:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


@dataclass
class Legacy:
    """Factories for the two original clients against this broker."""

    broker: BrokerProcess
    root: Path

    def workflow(self, site: str, inputs: dict[str, bytes], outputs: list[str],
                 command: str = CALC, client: str = "wf1", **extra: Any) -> Workflow:  # fmt: skip
        cwd = self.root / f"wf-{uuid.uuid4().hex[:8]}"
        cwd.mkdir()
        for name, data in inputs.items():
            (cwd / name).parent.mkdir(parents=True, exist_ok=True)
            (cwd / name).write_bytes(data)
        return Workflow(self.broker.url, site, self.broker.token("client", client), command,
                        list(inputs), outputs, self.broker.ca_bundle, cwd, **extra)  # fmt: skip

    def poller(self, site: str, token: str | None = None) -> Poller:
        calc_base = self.root / f"calc-{uuid.uuid4().hex[:8]}"
        calc_base.mkdir()
        return Poller(self.broker.url, site, token or self.broker.token("site", site),
                      self.broker.ca_bundle, calc_base)  # fmt: skip


@pytest.fixture
def legacy(broker: BrokerProcess, tmp_path: Path) -> Legacy:
    return Legacy(broker, tmp_path)


def started(workflow: Workflow) -> Workflow:
    """add-calcinfo and allow-wait-calc, as the workflow client begins."""
    answer = workflow.add()
    assert answer.status_code == 200, answer.text
    assert workflow.allow()
    return workflow


def take(poller: Poller) -> Iterator[str]:
    """The poller's loop until it runs a job: its first request only prints what it got."""
    assert poller.run_cycle() == []
    return poller.cycle()


def first(answer: requests.Response) -> tuple[int, Any, str]:
    error = answer.json()["errors"][0]
    return answer.status_code, error["code"], error["message"]


# --- off by default ---------------------------------------------------------------------------


def test_the_legacy_api_is_off_unless_the_config_enables_it(tmp_path: Path) -> None:
    try:
        plain = start_broker(tmp_path / "plain")
    except (BrokerUnavailable, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot start the broker: {exc}")
        raise
    try:
        session = http(plain, plain.token("client", "wf1"))
        base = f"{plain.url}/mi-distcomp-api"
        for answer in (session.get(f"{base}/calc-status?accept_id={uuid.uuid4()}"),
                       session.post(f"{base}/add-calcinfo", json={"calc-info": {}}),
                       http(plain, None).get(f"{base}/calc-request?site_id=x")):  # fmt: skip
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "not_found"
            assert "[legacy] enabled = true" in answer.json()["error"]["message"]
    finally:
        plain.stop()


# --- runs ---------------------------------------------------------------------------------------


def test_a_successful_run_step_by_step(legacy: Legacy, broker: BrokerProcess) -> None:
    data = b"hello\n"
    odd = bytes(range(256)) * 3
    wf = started(legacy.workflow(
        "legacy-a", {"in.dat": data, "odd.bin": odd}, ["out.dat", "bin.out"],
        parameters="p1 p2", types={"odd.bin": ("application/x-odd;", "charset=whatever")},
    ))  # fmt: skip
    assert wf.poll() == ("none", "not start")
    poller = legacy.poller("legacy-a")
    seen = []
    for step in take(poller):
        seen.append((step, wf.poll()))
        if step == "calc-params":
            info = poller.calc_info
            assert info is not None
            files = info["calc-info"]["parameter_files"]
            # Echoed as registered: mimetype strings unchanged, parameters as an opaque string.
            assert files["odd.bin"] == [base64.b64encode(odd).decode(), "application/x-odd;",
                                        "charset=whatever"]  # fmt: skip
            assert files["in.dat"] == ["aGVsbG8K", "text/plain;", "charset=us-ascii"]
            assert info["calc-info"]["parameters"] == "p1 p2"
            assert info["calc-info"]["command"] == CALC
            assert list(info["calc-info"]["result_files"]) == ["out.dat", "bin.out", STDOUT_NAME,
                                                               STDERR_NAME]  # fmt: skip
    assert seen == [
        ("calc-request", ("none", "not start")),
        ("calc-params", ("none", "sending params")),
        ("calc-params-complete", ("none", "complete send")),
        ("calc-start", ("none", "running")),
        ("calc-end", ("completed", "calc end")),
        ("send-results", ("completed", "getting return")),
        ("end-send", ("completed", "got return")),
    ]
    assert wf.finish() == 0
    assert (wf.cwd / "out.dat").read_bytes() == hashlib.sha256(data).hexdigest().encode() + b"\n"
    assert (wf.cwd / "bin.out").read_bytes() == bytes(range(256))
    # What the poller wrote: the output plus "\n\n".
    assert (wf.cwd / STDOUT_NAME).read_bytes() == "計算しました\n\n\n".encode()
    assert (wf.cwd / STDERR_NAME).read_bytes() == b"a line on stderr\n\n\n"
    # The same job in the new API: finished, its log, its results.
    assert wf.accept_id is None
    jobs = http(broker, broker.token("admin")).get(f"{broker.url}/api/v1/admin/jobs",
                                                   params={"site": "legacy-a"}).json()["jobs"]
    doc = next(j for j in jobs if j["state"] == "finished" and j["client"] == "wf1")
    assert doc["outcome"]["state"] == "completed" and doc["command"] == CALC
    assert {r["name"] for r in doc["results"]} == {"out.dat", "bin.out", STDOUT_NAME, STDERR_NAME}


def test_an_abnormal_run(legacy: Legacy) -> None:
    wf = started(legacy.workflow("legacy-a", {"in.dat": b"fail please\n"}, ["out.dat"]))
    poller = legacy.poller("legacy-a")
    rounds = []
    for step in take(poller):
        rounds.append(wf.poll())
        assert step != "calc-start" or rounds[-1] == ("none", "running")
    assert rounds[-1] == ("abnormal", "got return")
    assert ("abnormal", "calc end") in rounds  # status says it before progress ends the loop
    assert wf.finish() == 1
    assert (wf.cwd / STDOUT_NAME).read_bytes() == b"about to fail\n\n\n"
    assert (wf.cwd / STDERR_NAME).read_bytes() == b"failure detail\n\n\n"
    assert not (wf.cwd / "out.dat").exists()
    assert MISSING.format("out.dat") in wf.printed


# --- refusals -------------------------------------------------------------------------------------


def test_unknown_sites_and_commands_are_refused_with_202(legacy: Legacy) -> None:
    unknown = legacy.workflow("nowhere", {"in.dat": b"x"}, ["out.dat"])
    assert first(unknown.add())[:2] == (202, 400)
    assert unknown.accept_id is None  # the client prints the body and exits 1
    for command in ("/bin/sh", f"{CALC} ", f"{CALC};id", "checksum"):
        refused = legacy.workflow("legacy-a", {"in.dat": b"x"}, ["out.dat"], command=command)
        status, code, message = first(refused.add())
        assert (status, code) == (202, 401), command
        assert "not whitelisted" in message


@pytest.mark.parametrize("outputs, inputs", [
    (["../escape.txt"], {"in.dat": b"x"}),
    (["/etc/passwd"], {"in.dat": b"x"}),
    (["sub/../../up.txt"], {"in.dat": b"x"}),
    (["nul\x00name"], {"in.dat": b"x"}),
    (["in.dat;touch pwned"], {"in.dat;touch pwned": b"x"}),
    (["out.dat"], {"dir/in.dat": b"x"}),
    (["out.dat"], {"../in.dat": b"x"}),
])  # fmt: skip
def test_names_that_leave_the_job_are_refused(
    legacy: Legacy, outputs: list[str], inputs: dict[str, bytes]
) -> None:
    wf = legacy.workflow("legacy-a", inputs, outputs)
    status, code, message = first(wf.add())
    assert (status, code) == (202, 400)
    assert any(why in message for why in ("not allowed", "not a plain relative path",
                                          "hand result names to a shell")), message
    assert wf.accept_id is None


def test_an_oversized_body_gets_a_clear_error(legacy: Legacy) -> None:
    wf = legacy.workflow("legacy-a", {"in.dat": b"x" * (1 << 20)}, ["out.dat"])
    status, code, message = first(wf.add())
    assert (status, code) == (413, 413)
    assert "max_body" in message and "new API" in message
    assert wf.accept_id is None


def test_foreign_tokens_are_refused_on_every_endpoint(
    legacy: Legacy, broker: BrokerProcess
) -> None:
    wf = started(legacy.workflow("legacy-a", {"in.dat": b"mine\n"}, ["out.dat"]))
    job = wf.accept_id
    base = f"{broker.url}/mi-distcomp-api"
    other_client = http(broker, broker.token("client", "wf2"))
    other_site = http(broker, broker.token("site", "legacy-b"))
    site_a = http(broker, broker.token("site", "legacy-a"))
    nobody = http(broker, None)
    client_calls: list[Callable[[requests.Session], requests.Response]] = [
        lambda s: s.post(f"{base}/allow-wait-calc", json={"accept_id": job}),
        lambda s: s.post(f"{base}/cancel-wait-calc", json={"accept_id": job, "delete": "force"}),
        lambda s: s.get(f"{base}/get-calc-result?accept_id={job}", json={"accept_id": job}),
        lambda s: s.get(f"{base}/get-calcinfo"),
    ]
    for call in client_calls:
        for session, status in ((other_client, 403), (site_a, 403), (nobody, 401)):
            answer = call(session)
            assert first(answer)[:2] == (status, status), answer.text
    # The status loop gets HTTP 200, a refusal code and a status that ends it.
    for session, code in ((other_client, 403), (site_a, 403), (nobody, 401)):
        for endpoint, message in (("calc-status", "status:abnormal"),
                                  ("calc-progress", "status:got return")):  # fmt: skip
            answer = session.get(f"{base}/{endpoint}?accept_id={job}")
            assert first(answer) == (200, code, message)
    assert first(site_a.post(f"{base}/add-calcinfo", json=wf.calc_info()))[:2] == (403, 403)
    # Site calls: another site's token, a client token, no token; for site legacy-a's job.
    body = {"accept_id": job, "site_id": "legacy-a"}
    for session, status in ((other_site, 403), (other_client, 403), (nobody, 401)):
        answer = session.get(f"{base}/calc-request?site_id=legacy-a")
        assert first(answer)[:2] == (status, status)
    # Its own site's queue does not show another site's job.
    assert first(other_site.get(f"{base}/calc-request?site_id=legacy-b")) == (200, "0300", "no job")
    site_calls: list[Callable[[requests.Session, str], requests.Response]] = [
        lambda s, site: s.get(f"{base}/calc-params?accept_id={job}&site_id={site}"),
        lambda s, site: s.post(f"{base}/calc-params-complete", json={**body, "site_id": site}),
        lambda s, site: s.post(f"{base}/calc-start", json={**body, "site_id": site}),
        lambda s, site: s.post(f"{base}/calc-end", json={**body, "site_id": site,
                                                         "result": "abnormal"}),
        lambda s, site: s.post(f"{base}/send-results", json={**body, "site_id": site,
                                                             "result_files": {}}),
        lambda s, site: s.post(f"{base}/end-send", json={**body, "site_id": site,
                                                         "result": "end send"}),
    ]  # fmt: skip
    for site_call in site_calls:
        for session, site, status in ((other_site, "legacy-a", 403), (other_site, "legacy-b", 403),
                                      (other_client, "legacy-a", 403), (nobody, "legacy-a", 401)):
            answer = site_call(session, site)
            assert first(answer)[:2] == (status, status), (answer.request.url, answer.text)
    # None of it touched the job: the owner's poller runs it as if nothing happened.
    assert wf.poll() == ("none", "not start")
    assert "end-send" in list(take(legacy.poller("legacy-a")))
    assert wf.finish() == 0
    # And a poller of the same site that never took the job is refused when it acts on it.
    late = http(broker, broker.cli("token", "create", "--site", "legacy-a").stdout.strip())
    answer = late.post(f"{base}/calc-start", json=body)
    assert first(answer)[:2] == (409, 409)


def test_two_pollers_race_for_one_job(legacy: Legacy, broker: BrokerProcess) -> None:
    wf = started(legacy.workflow("legacy-race", {"in.dat": b"race\n"}, ["out.dat"]))
    second_token = broker.cli("token", "create", "--site", "legacy-race").stdout.strip()
    pollers = [legacy.poller("legacy-race"), legacy.poller("legacy-race", second_token)]
    for poller in pollers:
        assert poller.run_cycle() == []  # the first request only prints
        assert poller.calc_request() and poller.accept_id == wf.accept_id
    barrier = threading.Barrier(2)
    took: dict[int, bool] = {}

    def grab(index: int) -> None:
        barrier.wait()
        took[index] = pollers[index].calc_params()

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(took.values()) == [False, True]
    winner, loser = (pollers[0], pollers[1]) if took[0] else (pollers[1], pollers[0])
    assert loser.accept_id is None  # idle again, alive
    assert "taken already" in loser.printed[-1]
    # The loser cannot step into the winner's job either, even told its id.
    loser.accept_id = wf.accept_id
    assert first(loser.http.post(f"{loser.base}/calc-params-complete",
                                 json=loser._body()))[:2] == (409, 409)  # fmt: skip
    assert "end-send" in list(winner.after_params())
    assert wf.finish() == 0


def test_a_broker_killed_mid_job_loses_nothing(legacy: Legacy, broker: BrokerProcess) -> None:
    wf = started(legacy.workflow("legacy-kill", {"in.dat": b"survive\n"}, ["out.dat"]))
    poller = legacy.poller("legacy-kill")
    steps = []
    for step in take(poller):
        steps.append(step)
        if step in ("calc-params", "calc-start"):
            broker.kill9()
            broker.restart()
            assert wf.poll()[1] == {"calc-params": "sending params",
                                    "calc-start": "running"}[step]  # fmt: skip
    assert steps[-1] == "end-send"
    assert wf.finish() == 0
    assert (wf.cwd / "out.dat").read_bytes() == hashlib.sha256(b"survive\n").hexdigest().encode() \
        + b"\n"


# --- the new and the old on one store ----------------------------------------------------------


def agent_config(broker: BrokerProcess, root: Path, site: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "work").mkdir(exist_ok=True)
    token_file = root / "agent.token"
    token_file.write_text(broker.token("site", site) + "\n")
    token_file.chmod(0o600)
    prog = PROGRAMS / "testprog.py"
    return write_site_toml(
        root / "site.toml",
        site={"name": site, "work_base": root / "work", "log_file": root / "site.log",
              "legacy_commands": {"/opt/app/bin/checksum": "checksum"}},
        agent={
            "url": broker.url,
            "ca_bundle": broker.ca_bundle,
            "token_file": token_file,
            "agent_id": "agent-1",
            "lease_renew": "3s",
        },
        commands={
            "checksum": {"program": prog, "args": ["checksum"]},
            "fail": {
                "program": prog,
                "args": ["exit", "{code}"],
                "params": {"code": {"type": "int", "default": 3}},
            },
        },
    )


@contextlib.contextmanager
def agent_process(broker: BrokerProcess, root: Path, site: str) -> Iterator[Path]:
    """A real agent of ``site`` (its commands: ``agent_config``); yields its work dir."""
    config = agent_config(broker, root / "site", site)
    log = root / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bridge.site.agent", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    try:
        yield root / "site" / "work"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0, log.read_text(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


@pytest.fixture
def agent(broker: BrokerProcess, tmp_path: Path) -> Iterator[Path]:
    with agent_process(broker, tmp_path, "legacy-agent") as work:
        yield work


def waiting() -> Iterator[None]:
    """Pauses between status rounds while a real agent works (the original waits 10 s)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(0.05)
        yield
    raise AssertionError("the job did not end in 90 s")


def test_a_new_agent_runs_jobs_of_the_original_workflow_client(
    legacy: Legacy, agent: Path
) -> None:
    data = b"checked by a new agent\n"
    wf = started(legacy.workflow("legacy-agent", {"in.dat": data}, ["sums.txt"],
                                 command="checksum"))  # fmt: skip
    job_id = str(wf.accept_id)
    assert wf.finish(waiting()) == 0
    sums = (wf.cwd / "sums.txt").read_bytes()
    assert sums == f"{hashlib.sha256(data).hexdigest()}  in.dat\n".encode()
    assert sums == (agent / job_id / "sums.txt").read_bytes()  # what the site computed
    assert (wf.cwd / STDOUT_NAME).read_bytes() == b"checked 1 files\n\n\n"
    assert (wf.cwd / STDERR_NAME).read_bytes() == b"a line on stderr\n\n\n"
    # A failing command: abnormal, with the reason. One the site does not have is not taken
    # at all: it stays queued for an original poller of the site (none runs here).
    unknown = started(legacy.workflow("legacy-agent", {"in.dat": data}, ["out.dat"],
                                      command="not-at-the-site"))  # fmt: skip
    failing = started(legacy.workflow("legacy-agent", {"in.dat": data}, ["out.dat"],
                                      command="fail"))  # fmt: skip
    assert failing.finish(waiting()) == 1
    assert (failing.cwd / STDOUT_NAME).read_bytes() == b"about to fail\n\n\n"
    assert (failing.cwd / STDERR_NAME).read_bytes().startswith(b"failure detail\n\n\nmint-bridge: ")
    assert MISSING.format("out.dat") in failing.printed
    assert unknown.poll() == ("none", "not start")
    assert not (agent / str(unknown.accept_id)).exists()
    unknown.cancel()
    # An original whitelist's path, mapped by the site to one of its commands.
    mapped = started(legacy.workflow("legacy-agent", {"in.dat": data}, ["sums.txt"],
                                     command="/opt/app/bin/checksum"))  # fmt: skip
    assert mapped.finish(waiting()) == 0
    assert (mapped.cwd / "sums.txt").read_bytes() == sums


def test_an_agent_and_an_original_poller_share_a_site(
    legacy: Legacy, broker: BrokerProcess, tmp_path: Path
) -> None:
    """During a migration: the agent runs the commands its site config defines, the original
    poller the whitelisted command the agent does not, and neither job is rejected."""
    admin = http(broker, broker.token("admin"))
    data = b"one site, two kinds of runner\n"
    with agent_process(broker, tmp_path, "legacy-shared") as work:
        for _ in waiting():  # its first claim is in: it waits in its long poll now
            agents = admin.get(f"{broker.url}/api/v1/admin/agents").json()["agents"]
            if any(a["site"] == "legacy-shared" for a in agents):
                break
        # The oldest queued job is one only the poller runs: the agent must leave it.
        for_poller = started(legacy.workflow("legacy-shared", {"in.dat": data}, ["out.dat"]))
        for_agent = started(legacy.workflow("legacy-shared", {"in.dat": data}, ["sums.txt"],
                                            command="checksum"))  # fmt: skip
        poller_job, agent_job = str(for_poller.accept_id), str(for_agent.accept_id)
        assert for_agent.finish(waiting()) == 0
        sums = f"{hashlib.sha256(data).hexdigest()}  in.dat\n".encode()
        assert (for_agent.cwd / "sums.txt").read_bytes() == sums
        assert (work / agent_job / "sums.txt").read_bytes() == sums
        assert not (work / poller_job).exists()  # never claimed by the agent
        steps = list(take(legacy.poller("legacy-shared")))
        assert steps[0] == "calc-request" and steps[-1] == "end-send", steps
        docs = {j["job_id"]: j for j in admin.get(f"{broker.url}/api/v1/admin/jobs",
                                                  params={"site": "legacy-shared"}).json()["jobs"]}
        assert docs[agent_job]["agent_id"] == "agent-1"
        assert docs[poller_job]["agent_id"].startswith("legacy:")
        assert docs[poller_job]["command"] == CALC
        assert {d["outcome"]["state"] for d in docs.values()} == {"completed"}
    assert for_poller.finish() == 0
    assert (for_poller.cwd / "out.dat").read_bytes() == (
        hashlib.sha256(data).hexdigest().encode() + b"\n"
    )
    assert "rejected" not in (tmp_path / "agent.log").read_text(errors="replace")


def test_an_original_poller_runs_a_job_of_the_new_api(
    legacy: Legacy, broker: BrokerProcess
) -> None:
    api = http(broker, broker.token("client", "node1"))
    broker.token("site", "legacy-new")  # the poller's token: the broker serves the site
    data = b"from the new API\n"

    def create(command: str, **extra: Any) -> str:
        body = {"site": "legacy-new", "command": command,
                "inputs": [{"name": "in.dat", "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()}], **extra}  # fmt: skip
        job = api.post(f"{broker.url}/api/v1/jobs", json=body).json()["job_id"]
        upload = api.patch(f"{broker.url}/api/v1/jobs/{job}/inputs/in.dat", data=data,
                           headers={"Upload-Offset": "0",
                                    "Content-Type": "application/offset+octet-stream"})
        assert upload.status_code == 204
        assert api.post(f"{broker.url}/api/v1/jobs/{job}/submit").status_code == 200
        return str(job)

    # Not for original pollers: typed parameters (it would ignore them).
    with_params = create("checksum", params={"x": 1})
    poller = legacy.poller("legacy-new")
    assert poller.run_cycle() == [] and poller.run_cycle() == []
    job = create(CALC, metadata={"legacy_result_files": "out.dat:bin.out"})
    steps = list(poller.cycle())
    assert steps[0] == "calc-request" and steps[-1] == "end-send"
    info = poller.calc_info
    assert info is not None and info["calc-info"]["parameters"] == ""
    assert info["calc-info"]["parameter_files"]["in.dat"][1:] == ["text/plain;",
                                                                  "charset=us-ascii"]
    doc = api.get(f"{broker.url}/api/v1/jobs/{job}").json()
    assert doc["state"] == "finished" and doc["outcome"]["state"] == "completed"
    assert doc["agent_id"].startswith("legacy:")
    result = api.get(f"{broker.url}/api/v1/jobs/{job}/results/out.dat")
    assert result.content == hashlib.sha256(data).hexdigest().encode() + b"\n"
    assert api.get(f"{broker.url}/api/v1/jobs/{job}/results/bin.out").content == bytes(range(256))
    log = api.get(f"{broker.url}/api/v1/jobs/{job}/logs/stdout")
    assert log.content == "計算しました\n".encode()
    assert api.get(f"{broker.url}/api/v1/jobs/{with_params}").json()["state"] == "queued"
    api.post(f"{broker.url}/api/v1/jobs/{with_params}/cancel")


def test_the_drop_in_workflow_client_is_served_by_an_original_poller(
    legacy: Legacy, broker: BrokerProcess, tmp_path: Path
) -> None:
    """The workflow side moved first (``mint-bridge compat mi-system-wf``) while the site still
    runs the original poller: the poller is offered the command string as the workflow gave it
    and sends back the declared outputs, which land in the module's directory."""
    broker.token("site", "legacy-new")
    data = b"drop-in, original poller\n"
    cwd = tmp_path / "module"
    cwd.mkdir()
    (cwd / "in.dat").write_bytes(data)
    env = dict(os.environ, REQUESTS_CA_BUNDLE=str(broker.ca_bundle),
               MINT_BRIDGE_TOKEN=broker.token("client", "node2"))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "compat", "mi-system-wf", broker.url, "legacy-new",
         "-", CALC, "in.dat", "out.dat:bin.out"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        poller = legacy.poller("legacy-new")
        steps: list[str] = []
        for _ in waiting():
            steps = poller.run_cycle()
            if steps:
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "計算しました".encode() in out  # the solver's stdout streams to the module's
    assert steps[0] == "calc-request" and steps[-1] == "end-send", steps
    assert poller.calc_info is not None and poller.calc_info["calc-info"]["command"] == CALC
    assert proc.returncode == 0, err.decode()
    assert (cwd / "out.dat").read_bytes() == hashlib.sha256(data).hexdigest().encode() + b"\n"
    assert (cwd / "bin.out").read_bytes() == bytes(range(256))
    assert (cwd / STDOUT_NAME).read_bytes() == "計算しました\n\n\n".encode()


# --- reload without a restart --------------------------------------------------------------------


def test_the_whitelist_reloads_by_admin_call_and_by_sighup(broker: BrokerProcess) -> None:
    base = f"{broker.url}/mi-distcomp-api"
    admin = http(broker, broker.token("admin"))

    def polls(site: str) -> tuple[int, Any]:
        answer = http(broker, broker.token("site", site)).get(
            f"{base}/calc-request?site_id={site}")
        return answer.status_code, answer.json()["errors"][0]["code"]

    assert polls("legacy-new2") == (403, 403)
    with open(broker.config_path, "a") as config:
        config.write('"legacy-new2" = []\n')
    answer = admin.post(f"{broker.url}/api/v1/admin/reload")
    assert answer.status_code == 200
    assert answer.json()["legacy"]["sites"]["legacy-new2"] == []
    assert polls("legacy-new2") == (200, "0300")
    # A client or site token may not reload.
    refused = http(broker, broker.token("client", "wf1")).post(f"{broker.url}/api/v1/admin/reload")
    assert refused.status_code == 403
    # SIGHUP: gunicorn starts a new worker with the file read again.
    with open(broker.config_path, "a") as config:
        config.write('"legacy-hup" = []\n')
    assert polls("legacy-hup") == (403, 403)
    workers = {p.pid for p in psutil.Process(broker.pid).children()}
    broker.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while True:
        current = {p.pid for p in psutil.Process(broker.pid).children()}
        if current and not current & workers:
            try:
                if polls("legacy-hup") == (200, "0300"):
                    break
            except requests.RequestException:
                pass
        assert time.monotonic() < deadline, broker.log_tail()
        time.sleep(0.05)
