"""The broker over real HTTPS: gunicorn, TLS from a throwaway CA, tokens made by the CLI.

Every file travels as raw bytes and is checked byte for byte and by SHA-256 at the other end.
Long polls are shown to return because something changed (the request's own timeout is
shorter than the ``wait`` it asked for), never by measuring time. With CI=true a broker that
cannot start fails these tests instead of skipping them.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.broker import (
    BrokerFactory,
    BrokerProcess,
    BrokerUnavailable,
    start_broker,
    unavailable,
)

LIMIT = 4 << 20  # max_input_size and max_result_size of the test broker
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Api:
    """requests against one broker, verifying its certificate with the test CA."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker
        self.session = requests.Session()

    def __call__(
        self, method: str, path: str, token: str | None = None, *, timeout: float = 30, **kw: Any
    ) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        # verify per request: a session's own setting loses to $REQUESTS_CA_BUNDLE.
        return self.session.request(
            method, self.broker.url + path, headers=headers, timeout=timeout,
            verify=str(self.broker.ca_bundle), **kw,
        )  # fmt: skip


def assert_error(response: requests.Response, status: int, code: str, field: str | None = None
                 ) -> dict[str, Any]:  # fmt: skip
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    return error


def _start(root: Path, **settings: Any) -> BrokerProcess:
    try:
        return start_broker(root, **settings)
    except (BrokerUnavailable, OSError) as exc:
        unavailable(f"cannot start the broker: {exc}")
        raise


@pytest.fixture(scope="module")
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory(limits=f'max_input_size = {LIMIT}\nmax_result_size = {LIMIT}')


@pytest.fixture(scope="module")
def api(broker: BrokerProcess) -> Api:
    return Api(broker)


@pytest.fixture
def site(broker: BrokerProcess) -> tuple[str, str]:
    """A site of this test's own (name, agent token), so no other test's jobs interfere."""
    name = f"s-{uuid.uuid4().hex[:10]}"
    return name, broker.token("site", name)


@pytest.fixture(scope="module")
def client(broker: BrokerProcess) -> str:
    return broker.token("client", "node1")


def job_body(site: str, inputs: dict[str, bytes], **extra: Any) -> dict[str, Any]:
    return {
        "job_id": str(uuid.uuid4()),
        "site": site,
        "command": "fatigue",
        "params": {"cycles": "1000", "scale": 1.5, "verbose": True},
        "inputs": [{"name": n, "size": len(d), "sha256": sha(d)} for n, d in inputs.items()],
        **extra,
    }


def create(api: Api, token: str, site: str, inputs: dict[str, bytes], **extra: Any
           ) -> dict[str, Any]:  # fmt: skip
    response = api("POST", "/api/v1/jobs", token, json=job_body(site, inputs, **extra))
    assert response.status_code == 201, response.text
    return dict(response.json())


def upload(api: Api, token: str, job_id: str, name: str, data: bytes, offset: int = 0) -> int:
    response = api(
        "PATCH", f"/api/v1/jobs/{job_id}/inputs/{name}", token, data=data[offset:],
        headers={"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
    )  # fmt: skip
    assert response.status_code == 204, response.text
    return int(response.headers["Upload-Offset"])


def queued_job(api: Api, token: str, site: str, inputs: dict[str, bytes]) -> str:
    job = create(api, token, site, inputs)
    for name, data in inputs.items():
        upload(api, token, job["job_id"], name, data)
    response = api("POST", f"/api/v1/jobs/{job['job_id']}/submit", token)
    assert response.status_code == 200 and response.json()["state"] == "queued", response.text
    return str(job["job_id"])


def claim(api: Api, token: str, agent: str, wait: float = 0, timeout: float = 30
          ) -> requests.Response:  # fmt: skip
    return api("POST", f"/api/v1/agent/claim?wait={wait}", token, json={"agent_id": agent},
               timeout=timeout)  # fmt: skip


def claimed(api: Api, token: str, agent: str) -> tuple[str, dict[str, str]]:
    response = claim(api, token, agent)
    assert response.status_code == 200, response.text
    lease = response.json()["lease"]
    return response.json()["job"]["job_id"], {"Lease-Epoch": str(lease["epoch"])}


def start_running(api: Api, token: str, job_id: str, epoch: dict[str, str]) -> None:
    response = api("POST", f"/api/v1/agent/jobs/{job_id}/lease", token, headers=epoch,
                   json={"state": "running", "native_id": "4242"})  # fmt: skip
    assert response.status_code == 200 and response.json()["state"] == "running", response.text


def patch_result(api: Api, token: str, job_id: str, epoch: dict[str, str], name: str,
                 data: bytes, offset: int, end: int | None = None
                 ) -> requests.Response:  # fmt: skip
    return api(
        "PATCH", f"/api/v1/agent/jobs/{job_id}/results/{name}", token,
        data=data[offset:end], headers={
            **epoch, "Upload-Offset": str(offset), "Upload-Length": str(len(data)),
            "Upload-SHA256": sha(data), "Content-Type": "application/offset+octet-stream",
        },
    )  # fmt: skip


def append_log(api: Api, token: str, job_id: str, epoch: dict[str, str], stream: str,
               offset: int, data: bytes) -> requests.Response:  # fmt: skip
    return api("POST", f"/api/v1/agent/jobs/{job_id}/logs/{stream}", token, data=data,
               headers={**epoch, "Log-Offset": str(offset)})  # fmt: skip


def cut_patch(broker: BrokerProcess, path: str, token: str, offset: int, sent: bytes,
              declared: int) -> None:  # fmt: skip
    """A PATCH that announces ``declared`` bytes, sends ``sent`` and hangs up."""
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{broker.port}\r\n"
        f"Authorization: Bearer {token}\r\nUpload-Offset: {offset}\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    send_and_hang_up(broker, head + sent)


def send_and_hang_up(broker: BrokerProcess, data: bytes) -> None:
    """Send ``data`` over TLS, then end the connection (FIN) as a client that stopped would.

    The answer is read until the server closes: closing with unread data (a TLS session
    ticket) would reset the connection and let the kernel drop bytes the server had not read.
    """
    context = ssl.create_default_context(cafile=str(broker.ca_bundle))
    raw = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(data)
        socket.socket.shutdown(tls, socket.SHUT_WR)  # FIN, without ending TLS
        try:
            while tls.recv(65536):
                pass
        except (OSError, ssl.SSLError):
            pass  # the server may close without a TLS goodbye


def settled_offset(api: Api, token: str, path: str, expected: int) -> int:
    """HEAD until the broker has settled the cut request (it holds the file's lock until then)."""
    held = -1
    for _ in range(100):
        response = api("HEAD", path, token)
        assert response.status_code == 200
        held = int(response.headers["Upload-Offset"])
        if held == expected:
            break
        threading.Event().wait(0.05)
    return held


def in_thread(call: Callable[[], requests.Response]) -> Callable[[], requests.Response]:
    """Start ``call`` now; the returned function waits for and returns its answer."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return lambda: future.result(timeout=60)


def waiting_poll(broker: BrokerProcess, call: Callable[[], requests.Response]
                 ) -> Callable[[], requests.Response]:  # fmt: skip
    """Start a long poll and return once the broker holds it, so what follows must wake it."""
    api, admin = Api(broker), broker.token("admin")
    before = api("GET", "/api/v1/admin/queues", admin).json()["long_polls"]
    answer = in_thread(call)
    for _ in range(400):
        if api("GET", "/api/v1/admin/queues", admin).json()["long_polls"] > before:
            return answer
        threading.Event().wait(0.025)
    raise AssertionError("the broker never held the long poll")


# --- the whole life of a job -----------------------------------------------------------------


def test_full_lifecycle_moves_exact_bytes_both_ways(broker: BrokerProcess, api: Api, client: str,
                                                    site: tuple[str, str]) -> None:  # fmt: skip
    site_name, agent = site
    big = os.urandom(2 * 1024 * 1024 + 12345)  # more than one 1 MiB chunk, not a multiple of it
    small = b"cycles,stress\n1,200\n"
    body = job_body(site_name, {"model.dat": big, "params.csv": small, "empty.txt": b""})
    created = api("POST", "/api/v1/jobs", client, json=body)
    assert created.status_code == 201
    job_id = created.json()["job_id"]
    assert created.json()["state"] == "created" and created.json()["client"] == "node1"
    again = api("POST", "/api/v1/jobs", client, json=body)
    assert again.status_code == 200 and again.json()["job_id"] == job_id

    # A PATCH cut after 700000 bytes keeps exactly those; the upload resumes from there.
    path = f"/api/v1/jobs/{job_id}/inputs/model.dat"
    cut_patch(broker, path, client, 0, big[:700000], declared=len(big))
    assert settled_offset(api, client, path, 700000) == 700000
    stale = api("PATCH", path, client, data=big[5:], headers={"Upload-Offset": "5"})
    assert_error(stale, 409, "offset_mismatch")
    assert stale.headers["Upload-Offset"] == "700000"
    assert upload(api, client, job_id, "model.dat", big, offset=700000) == len(big)
    assert upload(api, client, job_id, "params.csv", small) == len(small)
    submitted = api("POST", f"/api/v1/jobs/{job_id}/submit", client)
    assert submitted.json()["state"] == "queued"
    assert all(i["received"] == i["size"] for i in submitted.json()["inputs"])

    # The client long-polls the job while an agent works on it.
    version = submitted.json()["version"]
    status_poll = waiting_poll(broker, lambda: Api(broker)(
        "GET", f"/api/v1/jobs/{job_id}?version={version}&wait=50", client, timeout=40))

    got = claim(api, agent, "agent-1", wait=5)
    assert got.status_code == 200 and got.json()["reattach"] is False
    assert got.json()["job"]["job_id"] == job_id
    epoch = {"Lease-Epoch": str(got.json()["lease"]["epoch"])}
    assert claim(api, agent, "agent-2").status_code == 204  # nobody else gets it
    woken = status_poll()
    assert woken.status_code == 200 and woken.json()["version"] > version
    assert woken.json()["state"] == "claimed"
    start_running(api, agent, job_id, epoch)

    # Inputs: whole, and from an offset with Range.
    whole = api("GET", f"/api/v1/agent/jobs/{job_id}/inputs/model.dat", agent)
    assert whole.status_code == 200 and whole.content == big
    assert whole.headers["ETag"] == f'"{sha(big)}"'
    part = api("GET", f"/api/v1/agent/jobs/{job_id}/inputs/model.dat", agent,
               headers={"Range": "bytes=1048570-"})  # fmt: skip
    assert part.status_code == 206 and part.content == big[1048570:]
    assert part.headers["Content-Range"] == f"bytes 1048570-{len(big) - 1}/{len(big)}"
    empty = api("GET", f"/api/v1/agent/jobs/{job_id}/inputs/empty.txt", agent)
    assert empty.status_code == 200 and empty.content == b""

    # Logs: replayed bytes are skipped; a client long poll wakes on new bytes.
    log_poll = waiting_poll(broker, lambda: Api(broker)(
        "GET", f"/api/v1/jobs/{job_id}/logs/stdout?offset=0&wait=50", client, timeout=40))
    assert append_log(api, agent, job_id, epoch, "stdout", 0, b"step 1\n").json() == {"size": 7}
    first = log_poll()
    assert first.status_code == 200 and first.content == b"step 1\n"
    assert first.headers["Log-Size"] == "7" and first.headers["Job-State"] == "running"
    replay = append_log(api, agent, job_id, epoch, "stdout", 0, b"step 1\nstep 2\n")
    assert replay.json() == {"size": 14}
    gap = append_log(api, agent, job_id, epoch, "stdout", 99, b"x")
    assert_error(gap, 409, "offset_mismatch")
    assert gap.headers["Log-Size"] == "14"
    assert append_log(api, agent, job_id, epoch, "stderr", 0, b"warn\n").json() == {"size": 5}

    # Results: one in two pieces in a subdirectory, one resumed after a cut, one empty.
    result = os.urandom(1536 * 1024 + 7)
    assert patch_result(api, agent, job_id, epoch, "sub/r.csv", result, 0, 1000000
                        ).status_code == 204  # fmt: skip
    head = api("HEAD", f"/api/v1/agent/jobs/{job_id}/results/sub/r.csv", agent)
    assert head.headers["Upload-Offset"] == "1000000"
    done = patch_result(api, agent, job_id, epoch, "sub/r.csv", result, 1000000)
    assert done.status_code == 204 and done.headers["Upload-Offset"] == str(len(result))
    note = b"fatigue life: 1.2e6 cycles\n" * 50
    cut_patch_result(broker, agent, job_id, epoch, "fatigue_result.txt", note, 300)
    rpath = f"/api/v1/agent/jobs/{job_id}/results/fatigue_result.txt"
    assert settled_offset(api, agent, rpath, 300) == 300
    assert patch_result(api, agent, job_id, epoch, "fatigue_result.txt", note, 300
                        ).status_code == 204  # fmt: skip

    version = api("GET", f"/api/v1/jobs/{job_id}", client).json()["version"]
    final_poll = waiting_poll(broker, lambda: Api(broker)(
        "GET", f"/api/v1/jobs/{job_id}?version={version}&wait=50", client, timeout=40))
    results = [
        {"name": "sub/r.csv", "size": len(result), "sha256": sha(result), "mode": 0o640},
        {"name": "fatigue_result.txt", "size": len(note), "sha256": sha(note), "mode": 0o644},
        {"name": "nothing.log", "size": 0, "sha256": EMPTY_SHA, "mode": 0o644},
    ]
    outcome = {"state": "completed", "exit_code": 0, "signal": None, "reason": ""}
    completion = {"outcome": outcome, "results": results,
                  "skipped": [{"name": "leak", "reason": "symlink out of the work dir"}]}
    finished = api("POST", f"/api/v1/agent/jobs/{job_id}/complete", agent, headers=epoch,
                   json=completion)  # fmt: skip
    assert finished.status_code == 200 and finished.json()["state"] == "finished"
    repeat = api("POST", f"/api/v1/agent/jobs/{job_id}/complete", agent, headers=epoch,
                 json=completion)  # fmt: skip
    assert repeat.status_code == 200 and repeat.json()["version"] == finished.json()["version"]

    document = final_poll().json()
    assert document["state"] == "finished" and document["outcome"]["exit_code"] == 0
    assert document["logs"] == {"stdout": 14, "stderr": 5}
    assert document["skipped"] == [{"name": "leak", "reason": "symlink out of the work dir"}]
    assert {r["name"]: r["sha256"] for r in document["results"]} == {
        r["name"]: r["sha256"] for r in results}
    assert api("GET", f"/api/v1/jobs/{job_id}/logs/stdout?offset=7", client).content == b"step 2\n"

    # The client fetches results whole and with Range; the bytes are the site's.
    got_result = api("GET", f"/api/v1/jobs/{job_id}/results/sub/r.csv", client)
    assert got_result.status_code == 200 and sha(got_result.content) == sha(result)
    tail = api("GET", f"/api/v1/jobs/{job_id}/results/sub/r.csv", client,
               headers={"Range": "bytes=1048576-"})  # fmt: skip
    assert tail.status_code == 206 and tail.content == result[1048576:]
    assert api("GET", f"/api/v1/jobs/{job_id}/results/fatigue_result.txt", client).content == note
    assert api("GET", f"/api/v1/jobs/{job_id}/results/nothing.log", client).content == b""

    acked = api("POST", f"/api/v1/jobs/{job_id}/ack", client)
    assert acked.status_code == 200 and acked.json()["results_available"] is False
    assert_error(api("GET", f"/api/v1/jobs/{job_id}/results/sub/r.csv", client), 404, "not_found")
    assert not (broker.data_dir / "jobs" / job_id / "results").exists()
    # The ack deleted the inputs too: an agent asking again is told so, not asked to retry.
    gone = api("GET", f"/api/v1/agent/jobs/{job_id}/inputs/model.dat", agent)
    assert_error(gone, 404, "not_found")
    assert "acknowledged" in gone.json()["error"]["message"]


def cut_patch_result(broker: BrokerProcess, token: str, job_id: str, epoch: dict[str, str],
                     name: str, data: bytes, sent: int) -> None:  # fmt: skip
    head = (
        f"PATCH /api/v1/agent/jobs/{job_id}/results/{name} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{broker.port}\r\nAuthorization: Bearer {token}\r\n"
        f"Lease-Epoch: {epoch['Lease-Epoch']}\r\nUpload-Offset: 0\r\n"
        f"Upload-Length: {len(data)}\r\nUpload-SHA256: {sha(data)}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    send_and_hang_up(broker, head + data[:sent])


# --- claims and leases -----------------------------------------------------------------------


def test_concurrent_claims_hand_a_job_to_exactly_one_agent(
    broker: BrokerProcess, api: Api, client: str, site: tuple[str, str]
) -> None:
    site_name, agent = site
    job_id = queued_job(api, client, site_name, {"in.txt": b"x"})
    barrier = threading.Barrier(8)

    def race(index: int) -> requests.Response:
        caller = Api(broker)
        barrier.wait(timeout=10)
        return claim(caller, agent, f"agent-{index}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(race, range(8)))
    winners = [a for a in answers if a.status_code == 200]
    assert len(winners) == 1, [a.status_code for a in answers]
    assert winners[0].json()["job"]["job_id"] == job_id
    assert sorted(a.status_code for a in answers) == [200] + [204] * 7


def test_waiting_claim_returns_as_soon_as_a_job_is_submitted(
    broker: BrokerProcess, api: Api, client: str, site: tuple[str, str]
) -> None:
    site_name, agent = site
    # The request gives up after 20 s but asked to wait 50 s: an answer means it was woken.
    waiting = waiting_poll(broker, lambda: claim(Api(broker), agent, "agent-1", wait=50,
                                                 timeout=20))
    job_id = queued_job(api, client, site_name, {"a.txt": b"abc"})
    answer = waiting()
    assert answer.status_code == 200 and answer.json()["job"]["job_id"] == job_id


def test_stale_epoch_is_refused_on_every_agent_write(
    api: Api, client: str, site: tuple[str, str]
) -> None:
    site_name, agent = site
    queued_job(api, client, site_name, {"a.txt": b"abc"})
    job_id, epoch = claimed(api, agent, "agent-1")
    stale = {"Lease-Epoch": str(int(epoch["Lease-Epoch"]) + 1)}
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/lease", agent, headers=stale),
                 409, "stale_epoch")  # fmt: skip
    assert_error(append_log(api, agent, job_id, stale, "stdout", 0, b"x"), 409, "stale_epoch")
    assert_error(patch_result(api, agent, job_id, stale, "r.txt", b"r", 0), 409, "stale_epoch")
    done = {"outcome": {"state": "completed", "exit_code": 0}}
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/complete", agent, headers=stale,
                     json=done), 409, "stale_epoch")  # fmt: skip
    assert api("POST", f"/api/v1/agent/jobs/{job_id}/lease", agent, headers=epoch
               ).status_code == 200  # fmt: skip


def test_cancel_wakes_the_agents_lease_poll_and_ends_as_cancelled(
    broker: BrokerProcess, api: Api, client: str, site: tuple[str, str]
) -> None:
    site_name, agent = site
    queued_job(api, client, site_name, {"a.txt": b"abc"})
    job_id, epoch = claimed(api, agent, "agent-1")
    start_running(api, agent, job_id, epoch)
    lease_poll = waiting_poll(broker, lambda: Api(broker)(
        "POST", f"/api/v1/agent/jobs/{job_id}/lease?wait=20", agent, headers=epoch, timeout=15))
    cancelled = api("POST", f"/api/v1/jobs/{job_id}/cancel", client)
    assert cancelled.json()["cancel_requested"] is True
    assert cancelled.json()["state"] == "running"  # the agent must stop it first
    assert lease_poll().json()["cancel_requested"] is True
    outcome = {"state": "cancelled", "exit_code": None, "signal": 15, "reason": "cancelled"}
    ended = api("POST", f"/api/v1/agent/jobs/{job_id}/complete", agent, headers=epoch,
                json={"outcome": outcome})  # fmt: skip
    assert ended.status_code == 200 and ended.json()["state"] == "cancelled"
    again = api("POST", f"/api/v1/jobs/{job_id}/cancel", client)
    assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_cancel_before_a_claim_ends_the_job_at_once(
    api: Api, client: str, site: tuple[str, str]
) -> None:
    site_name, agent = site
    job_id = queued_job(api, client, site_name, {"a.txt": b"abc"})
    cancelled = api("POST", f"/api/v1/jobs/{job_id}/cancel", client).json()
    assert cancelled["state"] == "cancelled" and cancelled["outcome"]["state"] == "cancelled"
    assert claim(api, agent, "agent-1").status_code == 204


def test_rejected_outcome_keeps_the_sites_reason(
    api: Api, client: str, site: tuple[str, str]
) -> None:
    site_name, agent = site
    queued_job(api, client, site_name, {"a.txt": b"abc"})
    job_id, epoch = claimed(api, agent, "agent-1")
    outcome = {"state": "rejected", "reason": "command 'rm' is not allowed",
               "error_kind": "CommandNotAllowed"}  # fmt: skip
    ended = api("POST", f"/api/v1/agent/jobs/{job_id}/complete", agent, headers=epoch,
                json={"outcome": outcome}).json()  # fmt: skip
    assert ended["state"] == "finished"
    assert ended["outcome"]["error_kind"] == "CommandNotAllowed"
    assert ended["outcome"]["reason"] == "command 'rm' is not allowed"


# --- who may do what ----------------------------------------------------------------------

CLIENT_ROUTES = [
    ("GET", "/api/v1/jobs/{job_id}"),
    ("HEAD", "/api/v1/jobs/{job_id}/inputs/{name}"),
    ("PATCH", "/api/v1/jobs/{job_id}/inputs/{name}"),
    ("POST", "/api/v1/jobs/{job_id}/submit"),
    ("GET", "/api/v1/jobs/{job_id}/logs/{stream}"),
    ("GET", "/api/v1/jobs/{job_id}/results/{name}"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
    ("POST", "/api/v1/jobs/{job_id}/ack"),
]
AGENT_ROUTES = [
    ("POST", "/api/v1/agent/jobs/{job_id}/lease"),
    ("GET", "/api/v1/agent/jobs/{job_id}/inputs/{name}"),
    ("POST", "/api/v1/agent/jobs/{job_id}/logs/{stream}"),
    ("HEAD", "/api/v1/agent/jobs/{job_id}/results/{name}"),
    ("PATCH", "/api/v1/agent/jobs/{job_id}/results/{name}"),
    ("POST", "/api/v1/agent/jobs/{job_id}/complete"),
    ("POST", "/api/v1/agent/jobs/{job_id}/release"),
]


def test_route_lists_cover_every_job_endpoint(api: Api) -> None:
    document = api("GET", "/api/v1/openapi.json").json()
    served = {
        (method.upper(), path)
        for path, operations in document["paths"].items() if "{job_id}" in path
        for method in operations
    }
    assert served == set(CLIENT_ROUTES) | set(AGENT_ROUTES)


@pytest.fixture(scope="module")
def owned(broker: BrokerProcess, api: Api, client: str) -> dict[str, str]:
    """A running job of client node1 at site 'owned-site', and tokens of outsiders."""
    agent = broker.token("site", "owned-site")
    queued_job(api, client, "owned-site", {"a.dat": b"data"})
    job_id, epoch = claimed(api, agent, "agent-1")
    return {
        "job_id": job_id, "epoch": epoch["Lease-Epoch"],
        "other_client": broker.token("client", "node2"),
        "other_site": broker.token("site", "other-site"),
        "own_site": agent,
    }  # fmt: skip


def _call(api: Api, method: str, template: str, token: str, job: dict[str, str]
          ) -> requests.Response:  # fmt: skip
    path = template.format(job_id=job["job_id"], name="a.dat", stream="stdout")
    headers = {"Lease-Epoch": job["epoch"], "Upload-Offset": "0", "Log-Offset": "0",
               "Upload-Length": "1", "Upload-SHA256": sha(b"x")}  # fmt: skip
    body = b"x" if method == "PATCH" or path.endswith("stdout") else b"{}"
    return api(method, path, token, headers=headers, data=body)


@pytest.mark.parametrize(("method", "template"), CLIENT_ROUTES)
@pytest.mark.parametrize("intruder", ["other_client", "own_site"])
def test_client_routes_refuse_foreign_tokens(
    api: Api, owned: dict[str, str], method: str, template: str, intruder: str
) -> None:
    response = _call(api, method, template, owned[intruder], owned)
    assert response.status_code == 403, response.text
    if method != "HEAD":
        assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(("method", "template"), AGENT_ROUTES)
@pytest.mark.parametrize("intruder", ["other_site", "client"])
def test_agent_routes_refuse_foreign_tokens(
    api: Api, owned: dict[str, str], client: str, method: str, template: str, intruder: str
) -> None:
    token = client if intruder == "client" else owned[intruder]
    response = _call(api, method, template, token, owned)
    assert response.status_code == 403, response.text
    if method != "HEAD":
        assert response.json()["error"]["code"] == "forbidden"


def test_admin_sees_every_job_and_the_queues(
    broker: BrokerProcess, api: Api, client: str, site: tuple[str, str]
) -> None:
    admin = broker.token("admin")
    site_name, _ = site
    job_id = queued_job(api, client, site_name, {"a.txt": b"abc"})
    other = broker.token("client", "node2")
    assert job_id not in {j["job_id"] for j in api("GET", "/api/v1/jobs", other).json()["jobs"]}
    assert job_id in {j["job_id"] for j in api("GET", "/api/v1/jobs", client).json()["jobs"]}
    assert job_id in {j["job_id"] for j in api("GET", "/api/v1/admin/jobs", admin).json()["jobs"]}
    queues = {q["site"]: q for q in api("GET", "/api/v1/admin/queues", admin).json()["sites"]}
    assert queues[site_name]["queued"] == 1 and queues[site_name]["oldest_wait"] >= 0
    assert api("GET", f"/api/v1/jobs/{job_id}", admin).status_code == 200
    assert_error(api("GET", "/api/v1/admin/queues", client), 403, "forbidden")
    assert_error(api("POST", "/api/v1/agent/claim", admin, json={"agent_id": "a"}), 403,
                 "forbidden")  # fmt: skip


def test_missing_unknown_and_revoked_tokens_get_401(broker: BrokerProcess, api: Api) -> None:
    assert_error(api("GET", "/api/v1/jobs"), 401, "unauthorized")
    assert_error(api("GET", "/api/v1/jobs", headers={"Authorization": "Basic dXNlcjpwdw=="}),
                 401, "unauthorized")  # fmt: skip
    assert_error(api("GET", "/api/v1/jobs", "not-a-token"), 401, "unauthorized")
    made = broker.cli("token", "create", "--client", "short-lived")
    token = made.stdout.strip()
    assert made.returncode == 0 and token.startswith("mbt_")
    assert api("GET", "/api/v1/jobs", token).status_code == 200
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert_error(api("GET", "/api/v1/jobs", forged), 401, "unauthorized")
    token_id = token.split("_")[1]
    assert token_id in broker.cli("token", "list").stdout
    assert token not in broker.cli("token", "list").stdout
    assert broker.cli("token", "revoke", token_id).returncode == 0
    assert_error(api("GET", "/api/v1/jobs", token), 401, "unauthorized")
    assert broker.cli("token", "revoke", token_id).returncode == 1


def test_tokens_in_urls_are_refused_and_never_logged(broker: BrokerProcess, api: Api,
                                                     client: str) -> None:  # fmt: skip
    response = api("GET", f"/api/v1/jobs?access_token={client}")
    assert_error(response, 400, "bad_request")
    assert api("GET", "/api/v1/jobs", client).status_code == 200
    secret = client.split("_", 2)[2]
    for log in (broker.access_log, broker.log_path):
        text = log.read_text(errors="replace")
        assert secret not in text and "Bearer" not in text, log


# --- what the broker refuses -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a/b", ".", "..", "-rf", "a\x00b", "a\nb", ""])
def test_unsafe_input_names_are_refused_at_create(api: Api, client: str, name: str) -> None:
    body = job_body("s1", {"ok.txt": b"1"})
    body["inputs"].append({"name": name, "size": 1, "sha256": sha(b"x")})
    assert_error(api("POST", "/api/v1/jobs", client, json=body), 400, "unsafe_name",
                 "inputs[1].name")  # fmt: skip


@pytest.mark.parametrize("name", ["..%2Fx", "a/%2e%2e/b", "/etc/passwd", "a%00b", "a%0Ab"])
def test_unsafe_result_paths_are_refused(api: Api, owned: dict[str, str], name: str) -> None:
    job_id = owned["job_id"]
    response = api(
        "PATCH", f"/api/v1/agent/jobs/{job_id}/results/{name}", owned["own_site"], data=b"x",
        headers={"Lease-Epoch": owned["epoch"], "Upload-Offset": "0", "Upload-Length": "1",
                 "Upload-SHA256": sha(b"x")},
    )  # fmt: skip
    assert_error(response, 400, "unsafe_name")


def test_unsafe_input_name_in_url_is_refused(api: Api, client: str, owned: dict[str, str]) -> None:
    response = api("PATCH", f"/api/v1/jobs/{owned['job_id']}/inputs/%2e%2e", client,
                   data=b"x", headers={"Upload-Offset": "0"})  # fmt: skip
    assert_error(response, 400, "unsafe_name")


def test_oversize_uploads_get_413_with_the_limit(api: Api, client: str,
                                                 site: tuple[str, str]) -> None:  # fmt: skip
    site_name, agent = site
    body = job_body(site_name, {"ok.txt": b"1"})
    body["inputs"].append({"name": "huge.bin", "size": LIMIT + 1, "sha256": sha(b"x")})
    error = assert_error(api("POST", "/api/v1/jobs", client, json=body), 413, "too_large",
                         "inputs[1].size")  # fmt: skip
    assert str(LIMIT) in error["message"]

    job = create(api, client, site_name, {"small.txt": b"12345"})
    more = api("PATCH", f"/api/v1/jobs/{job['job_id']}/inputs/small.txt", client,
               data=b"1234567890", headers={"Upload-Offset": "0"})  # fmt: skip
    assert_error(more, 413, "too_large")
    held = api("HEAD", f"/api/v1/jobs/{job['job_id']}/inputs/small.txt", client)
    assert held.headers["Upload-Offset"] == "0"

    def chunks() -> Iterator[bytes]:  # chunked encoding: no Content-Length to check up front
        yield b"12345"
        yield b"67890"

    chunked = api("PATCH", f"/api/v1/jobs/{job['job_id']}/inputs/small.txt", client,
                  data=chunks(), headers={"Upload-Offset": "0"})  # fmt: skip
    assert_error(chunked, 413, "too_large")

    job_id = queued_job(api, client, site_name, {"a.txt": b"a"})
    got_id, epoch = claimed(api, agent, "agent-1")
    assert got_id == job_id
    big = api("PATCH", f"/api/v1/agent/jobs/{job_id}/results/r.bin", agent, data=b"",
              headers={**epoch, "Upload-Offset": "0", "Upload-Length": str(LIMIT + 1),
                       "Upload-SHA256": sha(b"x")})  # fmt: skip
    error = assert_error(big, 413, "too_large", "Upload-Length")
    assert str(LIMIT) in error["message"]


def test_wrong_checksum_discards_the_upload(api: Api, client: str,
                                            site: tuple[str, str]) -> None:  # fmt: skip
    site_name, agent = site
    declared = b"the real content"
    job = create(api, client, site_name, {"in.txt": declared})
    path = f"/api/v1/jobs/{job['job_id']}/inputs/in.txt"
    wrong = b"the fake content"
    assert len(wrong) == len(declared)
    answer = api("PATCH", path, client, data=wrong[:6], headers={"Upload-Offset": "0"})
    assert answer.status_code == 204
    answer = api("PATCH", path, client, data=wrong[6:], headers={"Upload-Offset": "6"})
    assert_error(answer, 400, "checksum_mismatch")
    assert api("HEAD", path, client).headers["Upload-Offset"] == "0"
    assert_error(api("POST", f"/api/v1/jobs/{job['job_id']}/submit", client), 409,
                 "inputs_incomplete", "in.txt")  # fmt: skip
    assert upload(api, client, job["job_id"], "in.txt", declared) == len(declared)

    job_id = queued_job(api, client, site_name, {"a.txt": b"a"})
    got_id, epoch = claimed(api, agent, "agent-1")
    assert got_id == job_id
    result = b"result bytes"
    sent = api("PATCH", f"/api/v1/agent/jobs/{job_id}/results/r.txt", agent,
               data=b"tampered!!!!", headers={**epoch, "Upload-Offset": "0",
               "Upload-Length": str(len(result)), "Upload-SHA256": sha(result)})  # fmt: skip
    assert_error(sent, 400, "checksum_mismatch")
    listed = {"outcome": {"state": "completed", "exit_code": 0},
              "results": [{"name": "r.txt", "size": len(result), "sha256": sha(result)}]}
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/complete", agent, headers=epoch,
                     json=listed), 409, "inputs_incomplete", "r.txt")  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_json", None),
        (b'{"site": "s1", "command": "x", "walltime_limit": NaN}', 400, "invalid_json", None),
        (b'{"command": "x"}', 400, "missing_field", "site"),
        (b'{"site": "s1"}', 400, "missing_field", "command"),
        (b'{"site": 5, "command": "x"}', 400, "invalid_field", "site"),
        (b'{"site": "s1", "command": "x", "params": []}', 400, "invalid_field", "params"),
        (b'{"site": "s1", "command": "x", "params": {"a": [1]}}', 400, "invalid_field",
         "params.a"),
        (b'{"site": "s1", "command": "x", "inputs": [{"name": "a", "size": "1", '
         b'"sha256": "00"}]}', 400, "invalid_field", "inputs[0].size"),
        (b'{"site": "s1", "command": "x", "inputs": [{"name": "a", "size": 1}]}', 400,
         "missing_field", "inputs[0].sha256"),
        (b'{"site": "s1", "command": "x", "paramz": {}}', 400, "invalid_field", "paramz"),
        (b'{"site": "s1", "command": "x", "job_id": "1234"}', 400, "invalid_field", "job_id"),
        (b'{"site": "s1", "command": "x", "walltime_limit": -5}', 400, "invalid_field",
         "walltime_limit"),
    ],
)  # fmt: skip
def test_malformed_create_bodies_name_the_problem(
    api: Api, client: str, body: bytes, status: int, code: str, field: str | None
) -> None:
    response = api("POST", "/api/v1/jobs", client, data=body,
                   headers={"Content-Type": "application/json"})  # fmt: skip
    assert_error(response, status, code, field)


def test_malformed_agent_requests_name_the_problem(api: Api, owned: dict[str, str]) -> None:
    agent, job_id = owned["own_site"], owned["job_id"]
    assert_error(api("POST", "/api/v1/agent/claim", agent, json={}), 400, "missing_field",
                 "agent_id")  # fmt: skip
    assert_error(api("POST", "/api/v1/agent/claim", agent, data=b"{"), 400, "invalid_json")
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/lease", agent), 400, "missing_field",
                 "Lease-Epoch")  # fmt: skip
    epoch = {"Lease-Epoch": owned["epoch"]}
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/lease", agent, headers=epoch,
                     json={"state": "finished"}), 400, "invalid_field", "state")  # fmt: skip
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/logs/stdout", agent,
                     headers={**epoch, "Log-Offset": "-1"}, data=b"x"),
                 400, "invalid_field", "Log-Offset")  # fmt: skip
    bad_outcome = {"outcome": {"state": "completed", "exit_code": 300}}
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/complete", agent, headers=epoch,
                     json=bad_outcome), 400, "invalid_field", "outcome.exit_code")  # fmt: skip
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/complete", agent, headers=epoch,
                     json={"results": []}), 400, "missing_field", "outcome")  # fmt: skip
    assert_error(api("GET", f"/api/v1/agent/jobs/{uuid.uuid4()}/inputs/a.dat", agent), 404,
                 "not_found")  # fmt: skip


# --- crash safety -----------------------------------------------------------------------------


def test_kill_9_and_restart_lose_nothing(tmp_path: Path) -> None:
    broker = _start(tmp_path / "crash")
    try:
        _kill_and_check(broker)
    finally:
        broker.stop()


def _kill_and_check(broker: BrokerProcess) -> None:
    api, client, agent = Api(broker), broker.token("client", "node1"), broker.token("site", "x")
    queued_data = os.urandom(300000)
    queued_id = queued_job(api, client, "x", {"q.bin": queued_data})
    running_id = queued_job(api, client, "x", {"r.bin": b"run"})
    got, epoch = claimed(api, agent, "agent-1")
    assert got == queued_id  # oldest first; take the other one too
    got2, epoch2 = claimed(api, agent, "agent-1")
    assert got2 == running_id
    start_running(api, agent, running_id, epoch2)
    logged = b"".join(f"line {i}\n".encode() for i in range(500))
    for start in range(0, len(logged), 1000):
        assert append_log(api, agent, running_id, epoch2, "stdout", start,
                          logged[start:start + 1000]).status_code == 200  # fmt: skip
    result = os.urandom(200000)
    assert patch_result(api, agent, running_id, epoch2, "out.bin", result, 0, 120000
                        ).status_code == 204  # fmt: skip
    partial = os.urandom(250000)
    created = create(api, client, "x", {"p.bin": partial})
    assert upload(api, client, created["job_id"], "p.bin", partial[:100000]) == 100000

    broker.kill9()
    broker.restart()
    api = Api(broker)

    doc = api("GET", f"/api/v1/jobs/{running_id}", client).json()
    assert doc["state"] == "running" and doc["logs"]["stdout"] == len(logged)
    assert api("GET", f"/api/v1/jobs/{running_id}/logs/stdout", client).content == logged
    rpath = f"/api/v1/agent/jobs/{running_id}/results/out.bin"
    assert api("HEAD", rpath, agent).headers["Upload-Offset"] == "120000"
    assert patch_result(api, agent, running_id, epoch2, "out.bin", result, 120000
                        ).status_code == 204  # fmt: skip
    done = api("POST", f"/api/v1/agent/jobs/{running_id}/complete", agent, headers=epoch2,
               json={"outcome": {"state": "completed", "exit_code": 0},
                     "results": [{"name": "out.bin", "size": len(result),
                                  "sha256": sha(result)}]})  # fmt: skip
    assert done.status_code == 200, done.text
    fetched = api("GET", f"/api/v1/jobs/{running_id}/results/out.bin", client).content
    assert sha(fetched) == sha(result)

    claimed_doc = api("GET", f"/api/v1/jobs/{queued_id}", client).json()
    assert claimed_doc["state"] == "claimed"
    copy = api("GET", f"/api/v1/agent/jobs/{queued_id}/inputs/q.bin", agent).content
    assert sha(copy) == sha(queued_data)
    assert api("POST", f"/api/v1/agent/jobs/{queued_id}/lease", agent, headers=epoch
               ).status_code == 200  # fmt: skip

    ipath = f"/api/v1/jobs/{created['job_id']}/inputs/p.bin"
    assert api("HEAD", ipath, client).headers["Upload-Offset"] == "100000"
    assert upload(api, client, created["job_id"], "p.bin", partial, 100000) == len(partial)
    assert api("POST", f"/api/v1/jobs/{created['job_id']}/submit", client
               ).json()["state"] == "queued"  # fmt: skip


# --- time: leases and the queue TTL (a broker with a 1 s lease and a 2 s queue TTL) ----------


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = _start(tmp_path_factory.mktemp("quick"), jobs='lease_ttl = "1s"\nqueue_ttl = "2s"')
    yield process
    process.stop()


def test_unstarted_claim_whose_lease_expires_goes_to_another_agent(quick: BrokerProcess) -> None:
    api, client, agent = Api(quick), quick.token("client", "c"), quick.token("site", "q1")
    job_id = queued_job(api, client, "q1", {"a": b"a"})
    first_id, first = claimed(api, agent, "agent-1")
    assert first_id == job_id
    # Agent 2 waits longer than the lease; it gets the job once the lease expired.
    second = claim(api, agent, "agent-2", wait=50, timeout=20)
    assert second.status_code == 200 and second.json()["job"]["job_id"] == job_id
    assert second.json()["lease"]["epoch"] == int(first["Lease-Epoch"]) + 1
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/lease", agent, headers=first),
                 409, "stale_epoch")  # fmt: skip
    assert_error(append_log(api, agent, job_id, first, "stdout", 0, b"x"), 409, "stale_epoch")


def test_lost_running_job_comes_back_to_the_same_agent_only(quick: BrokerProcess) -> None:
    api, client, agent = Api(quick), quick.token("client", "c"), quick.token("site", "q2")
    job_id = queued_job(api, client, "q2", {"a": b"a"})
    _, epoch = claimed(api, agent, "agent-1")
    start_running(api, agent, job_id, epoch)
    doc = api("GET", f"/api/v1/jobs/{job_id}", client).json()
    while not doc["agent_lost"]:
        doc = api("GET", f"/api/v1/jobs/{job_id}?version={doc['version']}&wait=50", client,
                  timeout=20).json()  # fmt: skip
    assert doc["state"] == "running"
    assert claim(api, agent, "agent-2").status_code == 204
    back = claim(api, agent, "agent-1")
    assert back.status_code == 200 and back.json()["reattach"] is True
    assert back.json()["lease"]["epoch"] == int(epoch["Lease-Epoch"]) + 1
    assert back.json()["job"]["agent_lost"] is False
    assert_error(api("POST", f"/api/v1/agent/jobs/{job_id}/lease", agent, headers=epoch),
                 409, "stale_epoch")  # fmt: skip


def test_job_nobody_claims_expires_with_a_reason(quick: BrokerProcess) -> None:
    api, client = Api(quick), quick.token("client", "c")
    quick.token("site", "nobody-home")  # registered, but its agent never polls
    job_id = queued_job(api, client, "nobody-home", {"a": b"a"})
    doc = api("GET", f"/api/v1/jobs/{job_id}", client).json()
    while doc["state"] == "queued":
        doc = api("GET", f"/api/v1/jobs/{job_id}?version={doc['version']}&wait=50", client,
                  timeout=20).json()  # fmt: skip
    assert doc["state"] == "expired"
    assert doc["outcome"]["state"] == "lost"
    assert "no agent of site nobody-home claimed it within 2s" in doc["outcome"]["reason"]
