"""Whether a command's program can run at this site: it exists, is a file, is executable, and
so is the interpreter its ``#!`` line names.

Both the site's own health checks (``mint-bridge health --site-side``) and the built-in probe
(``bridge.site.probe``) ask this; it only looks at files and never runs a program.
"""

from __future__ import annotations

import os

from bridge.site.config import SiteConfig


def program_problem(path: str) -> str:
    """Why ``path`` cannot run as a program; empty when it can."""
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a file"
    if not os.access(path, os.X_OK):
        return f"is not executable (mode {os.stat(path).st_mode & 0o777:04o}; chmod +x it)"
    interpreter = _interpreter(path)
    if interpreter and not os.access(interpreter, os.X_OK):
        return f"its interpreter {interpreter} (#! line) is missing or not executable"
    return ""


def program_problems(site: SiteConfig) -> list[tuple[str, str, str]]:
    """``(command, program, problem)`` for each command of ``site`` whose program cannot run."""
    found = []
    for name, command in sorted(site.commands.items()):
        problem = program_problem(command.program)
        if problem:
            found.append((name, command.program, problem))
    return found


def _interpreter(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    return words[0] if words else None
