"""The original MInt external-computing API (``/mi-distcomp-api/``) on the broker's own store.

``init_app(app, config)`` serves it on a broker app: ``api_workflow`` for the original workflow
client, ``api_site`` for the original site poller, each its own blueprint over what
``api_base`` shares (the ``[legacy] enabled`` switch, the token check, the original's reply
shape). Without HTTP: ``replies`` holds the original's reply shapes and words, ``calc_info``
the check of what its workflow client registers, ``jobs`` how the store's jobs look to the
original clients and which ones its pollers may take; ``config`` and ``ini`` the ``[legacy]``
section and the import of the original ini file. The SQL of the records this API
keeps lives with the SQL backends (``broker.store.sql_legacy``).

Never registers anything as a side effect of an import: only ``init_app`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from broker.config import BrokerConfig


def init_app(app: Flask, config: BrokerConfig) -> None:
    """Serve the original API (its routes exist always; ``[legacy] enabled`` opens them)."""
    # Imported here, not at the top: ``broker.config`` imports ``broker.legacy.config``, which
    # runs this file first, and the API modules import ``broker.config`` in turn.
    from broker.legacy import api_site, api_workflow
    from broker.legacy.api_base import EXTENSION, LegacyRuntime

    app.extensions[EXTENSION] = LegacyRuntime(config.legacy)
    for area in (api_workflow.bp, api_site.bp):
        app.register_blueprint(area)
