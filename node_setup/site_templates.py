"""What ``setup site`` writes: the commented site config and its example program.

The texts hold no date or host-specific noise, so a second run produces the same bytes and
changes nothing. Paths are written as TOML basic strings (JSON's escapes are TOML's), so any
path survives exactly.
"""

from __future__ import annotations

import json
from typing import Protocol


class Layout(Protocol):
    """The paths the texts name (``site_setup.SitePaths``)."""

    @property
    def private(self) -> str: ...
    @property
    def work_base(self) -> str: ...
    @property
    def log_file(self) -> str: ...
    @property
    def example_program(self) -> str: ...
    @property
    def token_file(self) -> str: ...


def toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_site_config(site_id: str, paths: Layout, scheduler: str) -> str:
    return f"""\
# mint-bridge site config of {site_id}, written by `mint-bridge setup site`.
# Every key is described in the reference site.toml: `mint-bridge examples copy DIR` puts it
# (with the sample site) in DIR.
#
# The site decides everything here. MInt can only name a command below, give values for the
# parameters it declares and send input files; it never sends shell text or program paths.
# Private data (models, licences) stays in {paths.private}:
# programs read it where it lies, and it never goes back to MInt unless a program copies it
# into the job's work dir.

[site]
name = {toml_str(site_id)}
# Each job runs in <work_base>/<job-uuid>, created 0700.
work_base = {toml_str(paths.work_base)}
# Work dirs are kept this long after their job ended; then `mint-bridge site cleanup`
# (run it hourly from cron) removes them.
retention = "7d"
# What ran and what was refused.
log_file = {toml_str(paths.log_file)}

# --- one table per command MInt may run ----------------------------------------------------
# An example to copy: replace the program with your own (an absolute path, ~/..., or a path
# relative to this file). {{name}} in args is replaced by the parameter's checked value, as
# one argument, never through a shell.
[commands.example]
description = "Example: writes its message to result.txt"
program = {toml_str(paths.example_program)}
args = ["{{message}}"]
scheduler = {toml_str(scheduler)}   # local, slurm, torque or pbspro
walltime = "10m"

[commands.example.params.message]
type = "string"   # int, float, bool, string (with a pattern) or choice
default = "hello"
description = "Text the example writes to result.txt"
"""


def render_agent_table(paths: Layout, url: str, ca_bundle: str | None, allow_http: bool) -> str:
    lines = [
        "",
        "# --- the broker: this site's agent fetches jobs from it (the site opens no port) ------",
        "[agent]",
        f"url = {toml_str(url)}",
        "# The agent's token: only its owner may read the file; it is never on a command line.",
        f"token_file = {toml_str(paths.token_file)}",
    ]
    if ca_bundle:
        lines.append(f"ca_bundle = {toml_str(ca_bundle)}")
    if allow_http:
        lines.append("allow_http = true   # plain http, only to a broker on this machine")
    return "\n".join(lines) + "\n"


EXAMPLE_PROGRAM = """\
#!/bin/sh
# Example site program written by `mint-bridge setup site`: replace it with your own.
# It runs in the job's work dir; the files it leaves there go back to MInt.
printf '%s\\n' "$1" > result.txt
echo "example job $MINT_BRIDGE_JOB_ID wrote result.txt"
"""
