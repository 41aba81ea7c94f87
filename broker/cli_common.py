"""What every ``mint-bridge broker`` command shares: the ``--config`` option, opening the
store of a config, and turning a ``BridgeError`` into a message and its exit code.

``broker.cli`` and ``broker.operator_cli`` both use it, so a store opened by ``broker token``
and by ``broker jobs`` is the same. Nothing here prints a token or a token hash.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

import click

from bridge.core.errors import BridgeError
from broker.config import BrokerConfig
from broker.store import Store
from broker.store.locations import open_store as open_location

CONFIG_OPTION = click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False),
    help="Broker config (TOML), e.g. broker.toml.",
)  # fmt: skip


def fail(exc: BridgeError) -> NoReturn:
    click.echo(f"broker: error: {exc}", err=True)
    sys.exit(int(exc.exit_code))


def run_reporting(action: Callable[[], None]) -> None:
    """Run ``action``; a ``BridgeError`` ends the command with its message and exit code."""
    try:
        action()
    except BridgeError as exc:
        fail(exc)


def open_store(config: BrokerConfig) -> Store:
    """The config's store (SQLite at ``database`` unless ``[storage] store`` names another)."""
    if config.store_location is None:
        os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
    return open_location(config.store, pool_size=1)
