"""Replacement for the original ``execute_remote_command.sample.py`` (SSH method, program B).

Same argument forms::

    execute_remote_command.sample.py client_name:rme-u-tokyo \\
        client_cmd:~/misrc_remote_workflow/scripts/execute_remote-side_program_ssh.sh \\
        client_files:reduction_area.dat,tensile_strength.dat,yield_strength.dat

Same effect: the listed files go to a fresh work dir at the site, the site's program runs
there, and every file of the work dir comes back into the current directory. Differences, all
on purpose: the site runs only what its config defines, so ``client_cmd`` names a command by
its file name (the site config defines a command of that name, usually pointing at the same
script); ``client_name`` is a site of the bridge config or, as before, a host alias of
``~/.ssh/config``; the exit code is the site program's, not always 0.
"""

from __future__ import annotations

import logging
import os
import sys

from bridge.client.node_config import SshSite, find_config
from bridge.core.errors import BridgeError, ConfigError, ParameterInvalid

log = logging.getLogger(__name__)
_KEYS = ("client_name", "client_cmd", "client_files")


def parse_arguments(argv: list[str]) -> dict[str, str]:
    """``key:value`` words as the original accepted them; unknown or missing keys are errors."""
    values: dict[str, str] = {}
    for word in argv:
        key, sep, value = word.partition(":")
        if not sep or key not in _KEYS:
            raise ParameterInvalid(
                f"argument {word!r} is not one of client_name:HOST, client_cmd:PROGRAM, "
                "client_files:FILE1,FILE2"
            )
        values[key] = value
    for key in ("client_name", "client_cmd"):
        if not values.get(key):
            raise ParameterInvalid(f"{key}:... is required", field=key)
    return values


def command_name(client_cmd: str) -> str:
    """The site command a ``client_cmd`` path stands for: its file name."""
    return os.path.basename(client_cmd.rstrip("/"))


def main(argv: list[str]) -> int:
    from bridge.client.run import run_job_at

    try:
        args = parse_arguments(argv)
        files = [f for f in args.get("client_files", "").split(",") if f]
        config = find_config(None)
        try:
            site = config.site(args["client_name"])
        except ConfigError:
            site = SshSite(name=args["client_name"], host=args["client_name"])
        return run_job_at(
            site,
            command=command_name(args["client_cmd"]),
            inputs=files,
            params=[],
            output_dir=".",
        ).exit_code
    except BridgeError as exc:
        print(f"execute_remote_command: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
