"""The broker's web console (``/console/``): server-rendered pages for the people who run it.

Pages: overview, jobs (filters, keyset pages), a job (timeline, log tail, files, lease,
cancel), sites, agents and, for admins, tokens. Jinja2 templates, autoescaped, with one
stylesheet and one small script (auto-refresh) from the broker itself; every page works
without JavaScript. Log-in, sessions and CSRF: ``broker.console.access``.

The console never shows a token but once, at its creation, never a token hash, and never a
site's program paths (the broker does not know them).
"""

from __future__ import annotations

from flask import Flask, Response, g, render_template

from broker.console import access, display
from broker.console import jobs as _jobs  # noqa: F401 - registers its views
from broker.console import login as _login  # noqa: F401 - registers its views
from broker.console import pages as _pages  # noqa: F401 - registers its views
from broker.console import tokens as _tokens  # noqa: F401 - registers its views
from broker.console.blueprint import bp
from broker.errors import BrokerError

__all__ = ["bp", "init_app"]

bp.before_request(access.guard)
bp.after_request(access.page_headers)


@bp.errorhandler(BrokerError)
def _error_page(err: BrokerError) -> Response:
    """Errors as a page (the API answers JSON): what happened and, for a field, which one."""
    page = render_template("error.html", error=err, status=err.status)
    return Response(page, err.status, mimetype="text/html")


@bp.context_processor
def _page_context() -> dict[str, object]:
    live = g.get("console_session")
    return {"session": live, "csrf_token": live.csrf if live is not None else ""}


def init_app(app: Flask) -> None:
    access.init_app(app)
    display.init_app(app)
    app.register_blueprint(bp)
