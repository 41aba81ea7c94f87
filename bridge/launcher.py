"""The ``mint-bridge`` console script: the SSH forced command goes straight to the site entry.

``mint-bridge site serve-ssh --config FILE`` is the forced command of MInt's key, so it runs
once per job (and the ``local`` method starts it as ``python -m bridge.launcher ...``).
Importing click and the CLI module would add tens of milliseconds to every one of those runs, so
exactly that command line (or ``--config=FILE``) is served here; any other one, ``--help``
included, goes to the click CLI in ``bridge.cli`` unchanged.

Must never import click, or anything else a ``serve-ssh`` request does not need.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn


def main() -> None:
    config_path = serve_ssh_config(sys.argv[1:])
    if config_path is None:
        from bridge.cli import main as cli_main

        cli_main()
    else:
        serve_ssh(config_path)


def serve_ssh_config(args: list[str]) -> str | None:
    """FILE when ``args`` are exactly ``site serve-ssh --config FILE``; None for anything else."""
    match args:
        case ["site", "serve-ssh", "--config", path] if not path.startswith("-"):
            return path
        case ["site", "serve-ssh", option] if option.startswith("--config="):
            return option.removeprefix("--config=")
    return None


def serve_ssh(config_path: str) -> NoReturn:
    """Serve one protocol request on stdin/stdout (the SSH channel) and end the process."""
    from bridge.site.ssh_entry import serve_stdio

    exit_now(serve_stdio(config_path, os.environ.get("SSH_ORIGINAL_COMMAND")))


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's tear-down, which costs up to 0.1 s per process (module
    finalisation, paramiko's and requests' leftovers) on every job. Everything that must reach
    a file or a pipe is flushed first; connections and files were closed by the code that
    opened them."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
