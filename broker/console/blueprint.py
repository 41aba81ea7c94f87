"""The console's blueprint object, apart from its views so each view module can import it."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static", static_url_path="/static")  # fmt: skip
