"""``create_app(config)``: the broker's Flask app, one blueprint per API area.

Areas: client (``/api/v1/jobs``), agent (``/api/v1/agent``), admin (``/api/v1/admin``), meta
(OpenAPI document, health), ``/healthz`` (load balancers' checks, ``broker.healthz``), metrics
(``/metrics``, ``broker.metrics``), the web console (``/console/``, ``broker.console``, HTML
pages) and the original API (``/mi-distcomp-api``, ``broker.legacy``). The app answers every
error as the contract's JSON and never echoes a request header. It must run in ONE process per
instance (see ``broker.notify``): long polls are woken in-process, and other instances'
changes arrive through the store.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from werkzeug.routing import PathConverter

from broker import (
    api_admin,
    api_agent,
    api_client,
    console,
    errors,
    healthz,
    legacy,
    metrics,
    openapi,
)
from broker.config import BrokerConfig
from broker.housekeeping import Housekeeper
from broker.runtime import EXTENSION, Broker
from broker.transfers import drain_after_error


class AnyPath(PathConverter):
    """Like ``path`` but also matches a leading '/', so an absolute result path reaches the
    name check (and gets 400 unsafe_name) instead of silently not matching a route."""

    regex = r"[\s\S]+?"  # any character, newline included, so the name check sees it
    part_isolating = False  # may span several path segments


def create_app(
    config: BrokerConfig,
    *,
    housekeeping: bool = True,
    clock: Callable[[], float] | None = None,
) -> Flask:
    app = Flask("broker", static_folder=None)
    # A result path may not start with '/'; merging "//" would turn "/etc/x" into "etc/x"
    # instead of refusing it as unsafe.
    app.url_map.merge_slashes = False
    app.url_map.converters["anypath"] = AnyPath
    app.json.sort_keys = False  # type: ignore[attr-defined]
    broker = Broker.open(config, clock)
    app.extensions[EXTENSION] = broker
    errors.init_app(app)
    for area in (api_client.bp, api_agent.bp, api_admin.bp, openapi.bp, healthz.bp):
        app.register_blueprint(area)
    counters = metrics.init_app(app)  # GET /metrics, and the counters every request adds to
    console.init_app(app)  # the web console, /console/
    legacy.init_app(app, config)  # the original API; answers 404 unless [legacy] enables it
    app.after_request(lambda response: drain_after_error(response, config.body_timeout))
    if housekeeping:
        Housekeeper(broker, counters.expiries).start()
    return app
