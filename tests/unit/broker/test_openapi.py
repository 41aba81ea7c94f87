"""The OpenAPI document and the app's routes describe the same API, in both directions."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Flask

from broker.app import create_app
from broker.config import BrokerConfig
from broker.openapi import DOCUMENT

_METHODS = {"get", "head", "post", "put", "patch", "delete"}


def app_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/console/"):
            continue  # the web console: HTML pages for people, not part of the API
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        methods = set(rule.methods or ()) - {"OPTIONS"}
        if "GET" in methods:
            methods.discard("HEAD")  # Flask answers HEAD for every GET by itself
        routes |= {(method, path) for method in methods}
    return routes


def documented_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in DOCUMENT["paths"].items()
        for method in operations if method in _METHODS
    }


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    app = create_app(BrokerConfig(data_dir=str(tmp_path), tls=False, host="127.0.0.1"),
                     housekeeping=False)  # fmt: skip
    routes = app_routes(app)
    assert len(routes) >= 20
    assert routes == documented_routes()


def test_path_parameters_are_declared_for_every_operation() -> None:
    for path, operations in DOCUMENT["paths"].items():
        wanted = set(re.findall(r"{([^}]+)}", path))
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == wanted, (method, path)


def test_every_reference_resolves() -> None:
    text = repr(DOCUMENT)
    for kind, name in re.findall(r"#/components/(\w+)/(\w+)", text):
        assert name in DOCUMENT["components"][kind], name
