"""The served OpenAPI document against the live broker: schemathesis under gunicorn with TLS.

One bounded run over every operation, each area with its own token (client, site, admin;
passed through the environment, never on a command line). The run fails on any 5xx, any
answer outside the documented statuses, headers or schemas, and, for the v1 API, any request
the document allows that the server refuses (``positive_data_acceptance``) or forbids that the
server accepts (``negative_data_rejection``); the original API (``/mi-distcomp-api/``) keeps
its clients' status semantics, so those two checks do not apply there. ``ST_MAX_EXAMPLES``
(default 10) and ``ST_SEED`` widen or vary the run; the totals are printed for the record.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.broker import BrokerFactory, BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
SITE = "conformance-site"
INPUT, RESULT = "model.dat", "out/result.csv"
DATA = b"0123456789" * 100

CONFIG = """\
# One worker: CPython 3.11 before 3.11.8 can fail ast.parse in concurrent threads, which
# hypothesis uses to describe filters ("AST constructor recursion depth mismatch").
tls-verify = "${ST_CA}"
workers = 1
request-timeout = 30

# Every check is on (their default); the sections below only narrow them.
[checks]
enabled = true

# A refusal with 413 (a size beyond this broker's limit, stated in the served document) is a
# rejection as good as 400.
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]

# An upload body longer than what the declared file still lacks is refused with 413: a
# state of the file, not a rule the document could state.
[[operations]]
include-method = "PATCH"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", 401, 403, 404, 409, 413, 429, "5xx"]

# A range none of whose bytes lie in the file (its size is state) is 416.
[[operations]]
include-method = "GET"
include-path-regex = "/(inputs|results)/"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", 401, 403, 404, 409, 416, 429, "5xx"]

# The original API answers a refusal the way its clients expect (HTTP 200 or 202 with a
# non-200 errors[0].code, a missing token included: its status polls would crash on a 401),
# so HTTP statuses there say nothing about acceptance; every other check (no 5xx, documented
# statuses, content types, answer schemas) still applies.
[[operations]]
include-path-regex = "^/mi-distcomp-api/"
checks.positive_data_acceptance.enabled = false
checks.negative_data_rejection.enabled = false
checks.ignored_auth.enabled = false
checks.missing_required_header.enabled = false
"""


@pytest.fixture(scope="module")
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory(
        limits=f"max_input_size = {64 << 20}\nmax_result_size = {64 << 20}",
        extra=f'[legacy]\nenabled = true\n[legacy.sites]\n{SITE} = ["run.sh"]\n',
    )


def _schemathesis() -> str:
    path = Path(sys.executable).with_name("schemathesis")
    if not path.exists():
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    return str(path)


def _known(jobs: list[str], epochs: list[int]) -> str:
    """Half the job ids, names and epochs schemathesis sends are those of real jobs, so calls
    reach the logic behind the job lookup (else nearly all would be 404)."""
    return f"""
[dictionaries]
jobs = {{ values = {jobs!r} }}
names = {{ values = {[INPUT, RESULT]!r} }}
epochs = {{ values = {epochs!r} }}

[parameters]
"path.job_id" = {{ dictionary = "jobs", probability = 0.5 }}
"path.name" = {{ dictionary = "names", probability = 0.5 }}
"header.Lease-Epoch" = {{ dictionary = "epochs", probability = 0.5 }}
"""


def _call(broker: BrokerProcess, method: str, path: str, token: str, **kw: Any
          ) -> requests.Response:  # fmt: skip
    headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {token}"}
    return requests.request(method, broker.url + path, headers=headers, timeout=30,
                            verify=str(broker.ca_bundle), **kw)  # fmt: skip


def _real_jobs(broker: BrokerProcess) -> tuple[list[str], list[int]]:
    """A created job (input not yet sent), a running one and a finished one with a result."""
    client, site = broker.token("client", "conformance"), broker.token("site", SITE)
    files = [{"name": INPUT, "size": len(DATA), "sha256": hashlib.sha256(DATA).hexdigest()}]
    jobs, epochs = [], []
    for stage in ("created", "running", "finished"):
        job_id = str(uuid.uuid4())
        body = {"job_id": job_id, "site": SITE, "command": "fatigue", "inputs": files}
        assert _call(broker, "POST", "/api/v1/jobs", client, json=body).status_code == 201
        jobs.append(job_id)
        if stage == "created":
            continue
        sent = _call(broker, "PATCH", f"/api/v1/jobs/{job_id}/inputs/{INPUT}", client,
                     data=DATA, headers={"Upload-Offset": "0"})  # fmt: skip
        assert sent.status_code == 204, sent.text
        assert _call(broker, "POST", f"/api/v1/jobs/{job_id}/submit", client).status_code == 200
        claim = _call(broker, "POST", "/api/v1/agent/claim", site, json={"agent_id": "a1"})
        assert claim.status_code == 200, claim.text
        epoch = {"Lease-Epoch": str(claim.json()["lease"]["epoch"])}
        epochs.append(claim.json()["lease"]["epoch"])
        _call(broker, "POST", f"/api/v1/agent/jobs/{job_id}/lease", site, headers=epoch,
              json={"state": "running"})  # fmt: skip
        if stage == "finished":
            _finish(broker, site, job_id, epoch)
    return jobs, epochs


def _finish(broker: BrokerProcess, site: str, job_id: str, epoch: dict[str, str]) -> None:
    digest = hashlib.sha256(DATA).hexdigest()
    sent = _call(broker, "PATCH", f"/api/v1/agent/jobs/{job_id}/results/{RESULT}", site,
                 data=DATA, headers={**epoch, "Upload-Offset": "0", "Upload-SHA256": digest,
                                     "Upload-Length": str(len(DATA))})  # fmt: skip
    assert sent.status_code == 204, sent.text
    done = _call(broker, "POST", f"/api/v1/agent/jobs/{job_id}/complete", site, headers=epoch,
                 json={"outcome": {"state": "completed", "exit_code": 0},
                       "results": [{"name": RESULT, "size": len(DATA), "sha256": digest}]})
    assert done.status_code == 200 and done.json()["state"] == "finished", done.text


def _run(broker: BrokerProcess, out: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    config = out / "schemathesis.toml"
    config.write_text(CONFIG + _known(*_real_jobs(broker)))
    reports = out / "reports"
    env = {
        **os.environ,
        "ST_CA": str(broker.ca_bundle),
        "ST_CLIENT": broker.token("client", "conformance"),
        "ST_SITE": broker.token("site", SITE),
        "ST_ADMIN": broker.token("admin"),
        "ST_SITE_NAME": SITE,
        "ST_MAX_WAIT": "0.2",
        "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [_schemathesis(), "--config-file", str(config), "run",
         f"{broker.url}/api/v1/openapi.json", "--continue-on-failure",
         "--max-examples", os.environ.get("ST_MAX_EXAMPLES", "10"),
         "--seed", os.environ.get("ST_SEED", "20261203"),
         "--report", "junit", "--report-dir", str(reports)],
        cwd=out, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    return done, next(reports.glob("junit-*.xml"))


def _statuses_by_area(access_log: Path) -> dict[str, collections.Counter[str]]:
    areas: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in access_log.read_text().splitlines():
        match = re.search(r'"[A-Z]+ /(?:api/v1/(agent|admin|jobs)|(mi-distcomp-api))?\S* '
                          r'HTTP/[\d.]+" (\d{3})', line)
        if match:
            area = match.group(1) or ("legacy" if match.group(2) else "other")
            areas[area][match.group(3)[0] + "xx"] += 1
    return areas


@pytest.mark.timeout(900)  # a bounded run; about 2 min on an idle 2-core machine
def test_the_served_openapi_document_is_exact(broker: BrokerProcess, tmp_path: Path) -> None:
    done, junit = _run(broker, tmp_path)
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    generated = re.search(r"(\d+) generated", done.stdout)
    areas = _statuses_by_area(broker.root / "access.log")
    summary = (
        f"schemathesis {_version()}: {suite.get('tests')} operations, "
        f"{generated.group(1) if generated else '?'} test cases, "
        f"{sum(sum(c.values()) for c in areas.values())} API requests, "
        f"{suite.get('failures')} failures, {suite.get('errors')} errors; by area {dict(areas)}"
    )
    print(summary)
    assert done.returncode == 0, f"{summary}\n{done.stdout[-12000:]}\n{done.stderr[-2000:]}"
    assert int(suite.get("tests", 0)) >= 38 and suite.get("failures") == "0"
    # Each token reached its area's logic: answers beyond 401 and 404 in every area.
    for area in ("jobs", "agent", "admin", "legacy"):
        assert areas[area]["2xx"] > 0, (area, areas[area])


def _version() -> str:
    import schemathesis

    return str(schemathesis.__version__)
