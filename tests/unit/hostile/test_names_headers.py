"""Hostile file names (the one name check of both ends) and Authorization headers."""

from __future__ import annotations

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.errors import InputRejected, StagingError
from bridge.core.paths import check_name, check_relative_path
from broker.app import create_app
from broker.config import BrokerConfig

NAMES: list[tuple[str, str, str]] = [
    ("separator", "a/b", "path separator"),
    ("backslash", "a\\b", "path separator"),
    ("dot-dot", "..", "names a directory"),
    ("nul", "a\x00b", "NUL or control"),
    ("newline", "a\nb", "NUL or control"),
    ("dash", "-rf", "starts with '-'"),
    ("lone-surrogate", "a\udcff", "not valid UTF-8 text"),
    ("high-surrogate", "\ud800", "not valid UTF-8 text"),
    ("too-long", "a" * 256, "longer than 255 bytes"),
    ("too-long-multibyte", "\u00e9" * 128, "longer than 255 bytes"),
]


@pytest.mark.parametrize(("name", "fragment"), [c[1:] for c in NAMES],
                         ids=[c[0] for c in NAMES])  # fmt: skip
def test_each_hostile_name_is_refused_with_its_rule(name: str, fragment: str) -> None:
    with pytest.raises(InputRejected) as caught:
        check_name(name)
    assert fragment in caught.value.message


@given(st.text(max_size=300))
@settings(max_examples=1000, deadline=None)
def test_an_accepted_name_is_a_safe_utf8_file_name(name: str) -> None:
    try:
        check_name(name)
    except InputRejected:
        return
    encoded = name.encode("utf-8")  # never a non-UTF-8 file name
    assert 0 < len(encoded) <= 255 and b"/" not in encoded and b"\x00" not in encoded
    assert name not in (".", "..") and not name.startswith("-")


@given(st.text(max_size=300))
@settings(max_examples=1000, deadline=None)
def test_an_accepted_result_path_stays_inside_the_work_dir(path: str) -> None:
    try:
        parts = check_relative_path(path).parts
    except StagingError:
        return
    # Nothing above the work dir ("." is the work dir itself, collected as a directory: skipped).
    assert ".." not in parts and not path.startswith("/")
    for part in parts:
        part.encode("utf-8")


HEADERS: list[tuple[str, dict[str, str], str]] = [
    ("none", {}, "no Authorization header"),
    ("basic", {"Authorization": "Basic dXNlcjpwYXNz"}, "must be Bearer <token>"),
    ("malformed", {"Authorization": "Bearer not-a-token"}, "the bearer token is malformed"),
    ("unknown", {"Authorization": "Bearer mbt_0123456789ab_" + "A" * 43}, ""),
    ("huge", {"Authorization": "Bearer mbt_" + "a" * 8000}, ""),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    config = BrokerConfig(data_dir=str(tmp_path_factory.mktemp("b")), tls=False,
                          host="127.0.0.1")  # fmt: skip
    return create_app(config, housekeeping=False)


@pytest.mark.parametrize(("headers", "fragment"), [c[1:] for c in HEADERS],
                         ids=[c[0] for c in HEADERS])  # fmt: skip
def test_a_hostile_authorization_header_is_a_clean_401(
    app: Flask, headers: dict[str, str], fragment: str
) -> None:
    answer = app.test_client().get("/api/v1/jobs", headers=headers)
    assert answer.status_code == 401
    error = answer.get_json()["error"]
    assert error["code"] == "unauthorized" and fragment in error["message"]
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    for value in headers.values():  # the token is never echoed back
        assert value.split()[-1] not in answer.get_data(as_text=True)
