"""``/healthz`` in-process: no token, 200 when store and byte store answer, 503 naming which
does not; and the OpenAPI document lists it. (A database that is down: the HAProxy tests.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flask import Flask

from broker.app import create_app
from broker.config import BrokerConfig
from broker.openapi import DOCUMENT


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    config = BrokerConfig(data_dir=str(tmp_path / "data"), tls=False, host="127.0.0.1")
    return create_app(config, housekeeping=False)


def test_healthy_instance_answers_200_without_a_token(app: Flask, tmp_path: Path) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "store": "ok", "byte_store": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert sorted(p.name for p in (tmp_path / "data" / "jobs").iterdir()) == []  # probe removed


def test_a_byte_store_that_cannot_be_written_is_503_naming_it(
    app: Flask, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = tmp_path / "data" / "jobs"
    shutil.rmtree(jobs)
    jobs.write_text("not a directory")  # e.g. a shared mount that went away
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "store": "ok",
                                   "byte_store": "unreachable"}  # fmt: skip
    assert str(tmp_path) not in response.get_data(as_text=True)  # paths stay in the log
    assert any(str(jobs) in r.getMessage() for r in caplog.records)


def test_healthz_is_in_the_openapi_document_without_security() -> None:
    entry = DOCUMENT["paths"]["/healthz"]["get"]
    assert entry["security"] == []
    assert set(entry["responses"]) == {"200", "503"}
