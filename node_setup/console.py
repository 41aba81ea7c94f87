"""What setup and health share at the terminal: logging to stderr, errors, prompts."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

import click

from bridge.core.errors import BridgeError


def configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mint-bridge: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(level)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL if verbose < 3 else logging.DEBUG)


def fail(exc: BridgeError) -> NoReturn:
    click.echo(f"mint-bridge: error: {exc}", err=True)
    sys.exit(int(exc.exit_code))


class ClickPrompter:
    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def ask(self, question: str, default: str | None = None, hidden: bool = False) -> str:
        return str(click.prompt(question, default=default, hide_input=hidden, err=True))

    def confirm(self, question: str, default: bool = True) -> bool:
        return bool(click.confirm(question, default=default, err=True))

    def echo(self, text: str = "") -> None:
        click.echo(text)


def prompter_for(yes: bool) -> ClickPrompter:
    # Ask only with a person at a terminal; --yes or a pipe means every value comes from flags.
    return ClickPrompter(interactive=not yes and sys.stdin.isatty() and sys.stdout.isatty())
