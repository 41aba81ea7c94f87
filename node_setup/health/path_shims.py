"""``site.path_shim``: is the ``python3`` a site program finds on PATH a pyenv or conda shim?

A shim is a small script that works out which interpreter to run and then starts it: with
pyenv, about 0.13 s before each job's first line of Python, paid on every job. The check finds
the ``python3`` first on the site account's PATH (the PATH site programs get), and when it is a
shim, measures what it adds: the shim's ``-c pass`` against the interpreter it starts.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time

from node_setup.health.result import Probe

RUNS = 3  # median of a few starts: one is noisy on a busy machine
TIMEOUT = 20.0  # seconds for one interpreter start


def shim_kind(path: str) -> str | None:
    """"pyenv" or "conda" when ``path`` is one of their shims, else None."""
    parts = path.split(os.sep)
    if ".pyenv" in parts and "shims" in parts:
        return "pyenv"
    if "condabin" in parts:
        return "conda"
    try:
        with open(path, "rb") as handle:
            head = handle.read(1024)
    except OSError:
        return None
    if head.startswith(b"#!"):
        if b"pyenv" in head:
            return "pyenv"
        if b"conda" in head:
            return "conda"
    return None


def env_interpreters(programs: list[str]) -> list[str]:
    """Interpreters the programs start through PATH (``#!/usr/bin/env python3``): only those
    pass through a shim on every job."""
    names: set[str] = set()
    for program in programs:
        try:
            with open(program, "rb") as handle:
                line = handle.readline(256).decode(errors="replace")
        except OSError:
            continue
        if not line.startswith("#!"):
            continue
        words = line[2:].split()
        if len(words) >= 2 and os.path.basename(words[0]) == "env":
            args = [w for w in words[1:] if not w.startswith("-")]  # env -S ...
            if args and args[0].startswith("python"):
                names.add(args[0])
    return sorted(names)


def check_programs_path(probe: Probe, programs: list[str], path: str | None = None) -> None:
    """``site.path_shim`` for the interpreters the site's programs start through PATH."""
    names = env_interpreters(programs)
    if not names:
        probe.start("site.path_shim")
        probe.ok("site.path_shim", None, "", "no program starts Python through PATH")
        return
    check_path_shim(probe, path, names[0])


def check_path_shim(probe: Probe, path: str | None = None, program: str = "python3") -> None:
    probe.start("site.path_shim")
    search = os.environ.get("PATH", "") if path is None else path
    found = shutil.which(program, path=search)
    if found is None:
        probe.ok("site.path_shim", None, "", f"no {program} on PATH")
        return
    kind = shim_kind(found)
    if kind is None:
        probe.ok("site.path_shim", found, "", f"{program} on PATH is not a shim")
        return
    env = dict(os.environ, PATH=search)
    try:
        real = _run(found, ["-c", "import sys; print(sys.executable)"], env).strip()
        cost = _median_start(found, env) - _median_start(real, env)
    except (OSError, subprocess.SubprocessError) as exc:
        probe.warn("site.path_shim", found, "", f"{program} is a {kind} shim ({exc})",
                   _fix(found, None))  # fmt: skip
        return
    probe.warn(
        "site.path_shim",
        round(max(cost, 0.0), 3),
        "s",
        f"{program} first on PATH is a {kind} shim ({found}): it adds this much to every "
        f"job that starts {program}",
        _fix(found, real),
    )


def _fix(shim: str, real: str | None) -> str:
    target = os.path.dirname(real) if real else "the interpreter's own bin dir"
    return (
        f"put {target} before {os.path.dirname(shim)} on the site account's PATH (or set "
        "PATH in the command's env table), or name the interpreter by its absolute path in "
        "the program's #! line"
    )


def _run(program: str, args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [program, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return done.stdout


def _median_start(program: str, env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        _run(program, ["-c", "pass"], env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
