"""The original API in-process (Flask's test client, a fake clock): the state machine's edges
that the real-server tests do not reach quickly (leases lapsing, cancels at each step, retried
calls, what a new agent's results look like to the original workflow client, reloads)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from broker.app import create_app
from broker.auth import new_token
from broker.config import BrokerConfig
from broker.housekeeping import run_once
from broker.legacy.config import LegacyConfig
from broker.legacy.replies import STDERR_NAME, STDOUT_NAME
from broker.runtime import EXTENSION, Broker
from broker.store import ResultRecord, Scope, State

BASE = "/mi-distcomp-api"
SITE = "site-a"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self, tmp_path: Path, **legacy: Any) -> None:
        self.clock = Clock()
        settings = {"enabled": True, "sites": {SITE: ("run.sh", "other.sh")}, **legacy}
        config = BrokerConfig(data_dir=str(tmp_path / "data"), tls=False, host="127.0.0.1",
                              legacy=LegacyConfig(**settings))  # fmt: skip
        self.app: Flask = create_app(config, housekeeping=False, clock=self.clock)
        self.client: FlaskClient = self.app.test_client()
        self.wf = self.token(Scope.CLIENT, "wf1")
        self.site = self.token(Scope.SITE, SITE)
        self.site2 = self.token(Scope.SITE, SITE)  # a second poller of the same site
        self.admin = self.token(Scope.ADMIN, "admin")

    @property
    def broker(self) -> Broker:
        broker = self.app.extensions[EXTENSION]
        assert isinstance(broker, Broker)
        return broker

    def token(self, scope: Scope, subject: str) -> dict[str, str]:
        token, record = new_token(scope, subject, 0.0)
        self.broker.store.create_token(record)
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, endpoint: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        return self.client.post(f"{BASE}/{endpoint}", headers=headers, data=json.dumps(body))

    def get(self, endpoint: str, headers: dict[str, str], **query: str) -> Any:
        return self.client.get(f"{BASE}/{endpoint}", headers=headers, query_string=query)

    def add(self, outputs: tuple[str, ...] = ("out.dat",), command: str = "run.sh") -> str:
        empty = {"content": "", "mimetype1": "", "mimetype2": ""}
        results = {name: dict(empty) for name in (*outputs, STDOUT_NAME, STDERR_NAME)}
        info = {"command": command, "remote-site": SITE, "parameters": "",
                "parameter_files": {"in.dat": ["aGkK", "text/plain;", "charset=us-ascii"]},
                "result_files": results}  # fmt: skip
        answer = self.post("add-calcinfo", self.wf, {"calc-info": info})
        assert answer.status_code == 200, answer.json
        job_id: str = answer.json["errors"][0]["accept_id"]
        assert code(self.post("allow-wait-calc", self.wf, {"accept_id": job_id})) == (200, 200)
        return job_id

    def step(self, endpoint: str, job_id: str, headers: dict[str, str] | None = None,
             **extra: Any) -> Any:  # fmt: skip
        return self.post(endpoint, headers or self.site,
                         {"accept_id": job_id, "site_id": SITE, **extra})  # fmt: skip

    def params(self, job_id: str, headers: dict[str, str] | None = None) -> Any:
        return self.get("calc-params", headers or self.site, accept_id=job_id, site_id=SITE)

    def wf_view(self, job_id: str) -> tuple[str, str]:
        status = self.get("calc-status", self.wf, accept_id=job_id).json["errors"][0]["message"]
        progress = self.get("calc-progress", self.wf, accept_id=job_id).json["errors"][0]
        return status.split(":")[1], progress["message"].split(":")[1]

    def to_running(self, job_id: str) -> None:
        assert self.params(job_id).status_code == 200
        assert code(self.step("calc-params-complete", job_id)) == (200, 200)
        assert code(self.step("calc-start", job_id)) == (200, 200)


def code(answer: Any) -> tuple[int, Any]:
    return answer.status_code, answer.json["errors"][0]["code"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def entry(data: bytes, m1: str = "text/plain;", m2: str = "charset=us-ascii") -> dict[str, str]:
    return {"content": b64(data), "mimetype1": m1, "mimetype2": m2}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_a_cancel_before_the_poller_starts_turns_it_away(env: Env) -> None:
    job_id = env.add()
    assert env.params(job_id).status_code == 200
    env.post("cancel-wait-calc", env.wf, {"accept_id": job_id, "delete": "force"})
    answer = env.step("calc-params-complete", job_id)
    assert code(answer) == (409, 409) and "cancelled" in answer.json["errors"][0]["message"]
    assert env.wf_view(job_id) == ("abnormal", "got return")
    files = env.get("get-calc-result", env.wf, accept_id=job_id).json["errors"][0]
    stderr = base64.b64decode(files["result-info"]["result_files"][STDERR_NAME]["content"])
    assert stderr == b"\n\nmint-bridge: job cancelled: cancelled before the original poller " \
                     b"started it\n"


def test_a_cancel_while_running_is_answered_ok_and_discards_the_results(env: Env) -> None:
    job_id = env.add()
    env.to_running(job_id)
    env.post("cancel-wait-calc", env.wf, {"accept_id": job_id, "delete": "force"})
    assert code(env.step("calc-end", job_id, result="calc end")) == (200, 200)
    files = {"out.dat": entry(b"x")}
    assert code(env.step("send-results", job_id, result_files=files)) == (200, 200)
    assert code(env.step("end-send", job_id, result="end send")) == (200, 200)
    job = env.broker.store.get_job(job_id)
    assert job is not None and job.state is State.CANCELLED and job.listed_results() == []
    assert env.wf_view(job_id) == ("abnormal", "got return")


def test_a_lapsed_lease_gives_the_job_to_the_next_poller(env: Env) -> None:
    job_id = env.add()
    assert env.params(job_id).status_code == 200
    assert env.wf_view(job_id) == ("none", "sending params")
    env.clock.now += 601  # the legacy lease (10 min) lapses: the poller never renews it
    run_once(env.broker, env.clock.now)
    assert env.wf_view(job_id) == ("none", "not start")
    assert code(env.step("calc-params-complete", job_id)) == (409, 409)
    assert env.get("calc-request", env.site2, site_id=SITE).json["errors"][0]["accept_id"] \
        == job_id
    assert env.params(job_id, env.site2).status_code == 200
    assert code(env.step("calc-params-complete", job_id)) == (409, 409)  # still not the first
    assert code(env.step("calc-params-complete", job_id, env.site2)) == (200, 200)


def test_a_long_run_outlives_its_lease(env: Env) -> None:
    job_id = env.add()
    env.to_running(job_id)
    env.clock.now += 86400  # a day of computing without a call: the agent counts as lost
    run_once(env.broker, env.clock.now)
    job = env.broker.store.get_job(job_id)
    assert job is not None and job.state is State.RUNNING and job.agent_lost
    assert env.wf_view(job_id) == ("none", "running")
    assert code(env.step("calc-end", job_id, result="calc end")) == (200, 200)
    job = env.broker.store.get_job(job_id)
    assert job is not None and not job.agent_lost


def test_calls_the_poller_repeats_are_idempotent_and_take_only_declared_files(env: Env) -> None:
    job_id = env.add()
    assert env.params(job_id).status_code == 200
    # A second calc-params, even from the poller that has it, is refused: one claim per job.
    assert code(env.params(job_id)) == (409, 409)
    assert code(env.step("calc-params-complete", job_id)) == (200, 200)
    assert code(env.step("calc-params-complete", job_id)) == (200, 200)
    assert code(env.step("send-results", job_id, result_files={})) == (409, 401)
    assert code(env.step("calc-start", job_id)) == (200, 200)
    assert code(env.step("calc-end", job_id, result="finished")) == (400, 400)
    assert code(env.step("calc-end", job_id, result="calc end")) == (200, 200)
    for bad in ({"../out.dat": entry(b"x")}, {"undeclared.txt": entry(b"x")},
                {"out.dat": {"content": "@@@", "mimetype1": "", "mimetype2": ""}},
                {"out.dat": "not an object"}):  # fmt: skip
        assert code(env.step("send-results", job_id, result_files=bad)) == (400, 400)
    files = {"out.dat": entry(b"result\n", "odd/type;", "charset=odd"),
             STDOUT_NAME: entry(b"log\n\n\n"),
             STDERR_NAME: {"content": "", "mimetype1": "Error", "mimetype2": "gone"}}
    for _ in range(2):
        assert code(env.step("send-results", job_id, result_files=files)) == (200, 200)
    for _ in range(2):
        assert code(env.step("end-send", job_id, result="end send")) == (200, 200)
    got = env.get("get-calc-result", env.wf, accept_id=job_id).json["errors"][0]
    assert got["code"] == 200 and got["message"] == ""
    assert got["result-info"]["result_files"] == {
        "out.dat": entry(b"result\n", "odd/type;", "charset=odd"),  # types passed through
        STDOUT_NAME: entry(b"log\n\n\n"),
        STDERR_NAME: {"content": "", "mimetype1": "Error", "mimetype2": "gone"},
    }
    job = env.broker.store.get_job(job_id)
    assert job is not None and job.logs["stdout"] == 4  # "log\n", for clients of the new API
    assert job.skipped == ({"name": STDERR_NAME, "reason": "gone"},)


def test_an_abnormal_calc_end_is_never_refused_to_the_poller_that_holds_the_job(env: Env) -> None:
    job_id = env.add()
    assert env.params(job_id).status_code == 200
    assert code(env.step("calc-params-complete", job_id)) == (200, 200)
    assert code(env.step("calc-end", job_id, result="calc end")) == (409, 409)  # not started
    assert code(env.step("calc-end", job_id, result="abnormal")) == (200, 200)


def test_results_of_a_new_agent_reach_the_workflow_client(env: Env) -> None:
    job_id = env.add(outputs=("out.dat", "missing.dat"))
    store, files, now = env.broker.store, env.broker.files, env.clock.now
    claim = store.claim(SITE, "agent-1", 60, now)
    assert claim is not None and claim.job.job_id == job_id
    assert env.wf_view(job_id) == ("none", "sending params")
    store.mark_running(job_id, claim.epoch, "42", 60, now)
    assert env.wf_view(job_id) == ("none", "running")
    for area, name, data in (("logs", "stdout", b"out line\n"), ("results", "out.dat", b"R"),
                             ("results", "extra.bin", b"\x00\xff")):  # fmt: skip
        with files.open_for_write(job_id, area, name, 0) as sink:
            sink.write(data)
        if area == "logs":
            store.append_log(job_id, name, claim.epoch, 0, len(data), now)
        else:
            record = ResultRecord(name, len(data), hashlib.sha256(data).hexdigest(), len(data))
            store.set_result_upload(job_id, claim.epoch, record, 0, now)
    listed = [r for r in store.get_job(job_id).results]  # type: ignore[union-attr]
    store.complete(job_id, claim.epoch, {"state": "completed", "exit_code": 0}, listed, [], now)
    assert env.wf_view(job_id) == ("completed", "got return")
    got = env.get("get-calc-result", env.wf, accept_id=job_id).json["errors"][0]
    assert got["result-info"]["result_files"] == {  # declared names only, in declared order
        "out.dat": entry(b"R"),
        "missing.dat": {"content": "", "mimetype1": "Error",
                        "mimetype2": "出力指定ファイル(missing.dat)がありませんでした。"},
        STDOUT_NAME: entry(b"out line\n\n\n"),
        STDERR_NAME: {"content": b64(b"\n\n"), "mimetype1": "text/plain;",
                      "mimetype2": "charset=us-ascii"},
    }  # fmt: skip


def test_calc_request_offers_the_oldest_job_an_original_poller_may_run(env: Env) -> None:
    client = env.token(Scope.CLIENT, "node1")
    for command, params in (("not-listed", {}), ("run.sh", {"n": 1})):
        body = {"site": SITE, "command": command, "params": params}
        created = env.client.post("/api/v1/jobs", headers=client, data=json.dumps(body))
        env.client.post(f"/api/v1/jobs/{created.get_json()['job_id']}/submit", headers=client)
    assert code(env.get("calc-request", env.site, site_id=SITE)) == (200, "0300")
    legacy_job = env.add()
    env.clock.now += 1
    env.add()
    answer = env.get("calc-request", env.site, site_id=SITE).json["errors"][0]
    assert answer == {"code": 200, "message": "job", "accept_id": legacy_job}
    # Even told the id, a poller cannot take a job that is not for it.
    queued = env.broker.store.queued_job_ids(SITE, 10)
    assert code(env.params(queued[0])) == (403, 403)


def test_wrong_order_and_unknown_ids_are_refused(env: Env) -> None:
    job_id = env.add()
    assert code(env.post("allow-wait-calc", env.wf, {"accept_id": job_id})) == (409, 401)
    assert code(env.get("get-calc-result", env.wf, accept_id=job_id)) == (409, 400)
    for bad in ("not-a-uuid", "00000000-0000-4000-8000-000000000000"):
        assert code(env.post("allow-wait-calc", env.wf, {"accept_id": bad})) == (404, 404)
    assert code(env.post("allow-wait-calc", env.wf, {})) == (400, 400)
    answer = env.client.post(f"{BASE}/add-calcinfo", headers=env.wf, data=b"{not json")
    assert code(answer) == (400, 400)


def test_get_calcinfo_lists_original_jobs_without_contents_to_admins(env: Env) -> None:
    job_id = env.add()
    listing = env.get("get-calcinfo", env.admin).json
    assert listing[job_id]["calc_status"] == "not start"
    assert listing[job_id]["calc-info"]["parameter_files"] == {
        "in.dat": ["text/plain;", "charset=us-ascii"]}
    assert code(env.get("get-calcinfo", env.wf)) == (403, 403)


def test_reload_puts_a_new_legacy_section_in_force(tmp_path: Path) -> None:
    config_path = tmp_path / "broker.toml"
    config_path.write_text(f'[server]\nhost = "127.0.0.1"\ntls = false\n[storage]\n'
                           f'data_dir = "{tmp_path / "data"}"\n[legacy]\nenabled = true\n'
                           f'[legacy.sites]\n"{SITE}" = ["run.sh"]\n')  # fmt: skip
    from broker.config import load_config

    app = create_app(load_config(str(config_path)), housekeeping=False)
    client = app.test_client()
    broker = app.extensions[EXTENSION]
    tokens = {}
    for scope, subject in ((Scope.ADMIN, "admin"), (Scope.SITE, SITE)):
        token, record = new_token(scope, subject, 0.0)
        broker.store.create_token(record)
        tokens[scope] = {"Authorization": f"Bearer {token}"}
    poll = f"{BASE}/calc-request?site_id={SITE}"
    assert client.get(poll, headers=tokens[Scope.SITE]).status_code == 200
    config_path.write_text(config_path.read_text().replace("enabled = true", "enabled = false"))
    answer = client.post("/api/v1/admin/reload", headers=tokens[Scope.ADMIN])
    assert answer.status_code == 200 and answer.get_json()["legacy"]["enabled"] is False
    off = client.get(poll, headers=tokens[Scope.SITE])
    assert off.status_code == 404 and off.get_json()["error"]["code"] == "not_found"
    config_path.write_text("[server\n")
    broken = client.post("/api/v1/admin/reload", headers=tokens[Scope.ADMIN])
    assert broken.status_code == 400
    assert "the running config stays" in broken.get_json()["error"]["message"]
    assert client.get(poll, headers=tokens[Scope.SITE]).status_code == 404


def test_reload_needs_a_config_file(env: Env) -> None:
    answer = env.client.post("/api/v1/admin/reload", headers=env.admin)
    assert answer.status_code == 409


def test_inputs_too_big_for_one_body_stay_with_the_new_api(tmp_path: Path) -> None:
    env = Env(tmp_path, max_body=2048)
    client = env.token(Scope.CLIENT, "node1")
    data = b"x" * 2000  # 2668 bytes as base64
    body = {"site": SITE, "command": "run.sh",
            "inputs": [{"name": "big.dat", "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()}]}  # fmt: skip
    job_id = env.client.post("/api/v1/jobs", headers=client,
                             data=json.dumps(body)).get_json()["job_id"]  # fmt: skip
    upload = env.client.patch(f"/api/v1/jobs/{job_id}/inputs/big.dat", data=data,
                              headers={**client, "Upload-Offset": "0"})  # fmt: skip
    assert upload.status_code == 204
    env.client.post(f"/api/v1/jobs/{job_id}/submit", headers=client)
    assert code(env.get("calc-request", env.site, site_id=SITE)) == (200, "0300")
    answer = env.params(job_id)
    assert code(answer) == (413, 413) and "max_body" in answer.json["errors"][0]["message"]
    job = env.broker.store.get_job(job_id)
    assert job is not None and job.state is State.QUEUED  # still there for an agent


def test_a_job_that_ends_abnormally_between_status_and_progress_is_reported_abnormal(
    env: Env,
) -> None:
    job_id = env.add()
    store, now = env.broker.store, env.clock.now
    claim = store.claim(SITE, "agent-1", 60, now)
    assert claim is not None
    store.mark_running(job_id, claim.epoch, None, 60, now)
    # The workflow client's round: calc-status while it runs ...
    assert env.get("calc-status", env.wf, accept_id=job_id).json["errors"][0]["message"] \
        == "status:none"
    # ... the agent ends it (failed) ...
    store.complete(job_id, claim.epoch, {"state": "failed", "exit_code": 3}, [], [], now)
    # ... then calc-progress: not yet "got return", or the client would exit 0.
    progress = env.get("calc-progress", env.wf, accept_id=job_id).json["errors"][0]["message"]
    assert progress == "status:getting return"
    assert env.wf_view(job_id) == ("abnormal", "got return")  # the next round


def test_without_calc_status_an_abnormal_end_reads_got_return_after_a_grace(env: Env) -> None:
    job_id = env.add()
    env.post("cancel-wait-calc", env.wf, {"accept_id": job_id, "delete": "force"})
    progress = env.get("calc-progress", env.wf, accept_id=job_id).json["errors"][0]["message"]
    assert progress == "status:getting return"
    env.clock.now += 61
    progress = env.get("calc-progress", env.wf, accept_id=job_id).json["errors"][0]["message"]
    assert progress == "status:got return"
