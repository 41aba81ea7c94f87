"""Checks of a cluster's login node, for a site whose scheduler runs there over SSH.

    site.login_node          the login node answers without a prompt (``BatchMode``), with
                             its host key pinned (value: what a first connection costs, ms)
    site.login_node.workdir  shared_workdir = true: a file written in the work base here is
                             read there and one written there is read here (same path, same
                             bytes); shared_workdir = false: ``remote_root`` is writable there

The scheduler's own status command runs through the same connection (``site.scheduler.*``
in ``health.site``). Every failure says which side to fix: an unpinned or changed host key,
a refused login, a login node that is down, a work dir the login node does not see.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence

from bridge.core.errors import SchedulerError
from node_setup.health.result import Probe
from schedulers.login_host import LoginHost, classify, command_argv, ensure_master, exit_argv

CHECK = "site.login_node"
WORKDIR_CHECK = "site.login_node.workdir"


def run_there(
    login: LoginHost, argv: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``argv`` run on the login node over the shared connection; SchedulerError when ssh
    itself failed or the program is missing there, else the program's own result."""
    ensure_master(login, timeout)
    try:
        proc = subprocess.run(
            command_argv(login, argv), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise SchedulerError(
            f"`{' '.join(argv)}` on login host {login.where} gave no answer within "
            f"{timeout:g} s; check the login node's load and its scheduler client",
            transient=True,
        ) from exc
    if proc.returncode != 0:
        failure = classify(login, proc.returncode, proc.stderr, argv[0])
        if failure is not None:
            raise failure
    return proc


def check_login_node(login: LoginHost, work_base: str, probe: Probe, timeout: float) -> bool:
    """The login node's checks; False when it cannot be reached (the rest would fail too)."""
    probe.start(CHECK, f"ssh to login host {login.where} hangs: check the network and its sshd")
    started = time.monotonic()
    try:
        _fresh_connection(login, timeout)
        run_there(login, ["true"], timeout)
    except SchedulerError as exc:
        message, _, fix = exc.message.rpartition("; ")
        probe.fail(CHECK, login.where, "", message or exc.message, fix or "see the message")
        return False
    cost = round((time.monotonic() - started) * 1000)
    probe.ok(CHECK, cost, "ms", f"{login.where} answers with its pinned host key, no prompt")
    if login.shared_workdir:
        _check_shared_workdir(login, work_base, probe, timeout)
    else:
        _check_remote_root(login, probe, timeout)
    return True


def _fresh_connection(login: LoginHost, timeout: float) -> None:
    """End a shared connection left from before, so the check proves a new login works
    (a pinned key replaced since, a key removed from authorized_keys) and times one."""
    subprocess.run(exit_argv(login), capture_output=True, timeout=timeout, check=False)


def _check_shared_workdir(login: LoginHost, work_base: str, probe: Probe, timeout: float) -> None:
    probe.start(WORKDIR_CHECK)
    fix = (
        f"mount the work base {work_base} at the same path on the login node, or set "
        "[scheduler] shared_workdir = false and remote_root to stage each job there"
    )
    try:
        here = tempfile.mkdtemp(prefix=".mint-bridge-probe-", dir=work_base)
    except OSError as exc:
        probe.fail(WORKDIR_CHECK, work_base, "", f"cannot write in the work base: {exc}", fix)
        return
    try:
        mark = secrets.token_hex(16)
        with open(os.path.join(here, "from-gateway"), "w", encoding="ascii") as handle:
            handle.write(mark)
        seen = run_there(login, ["cat", "--", os.path.join(here, "from-gateway")], timeout)
        if seen.returncode != 0 or seen.stdout != mark:
            said = seen.stderr.strip()[:200] or "other bytes"
            probe.fail(
                WORKDIR_CHECK, work_base, "",
                f"the login node does not see the file written here in {here} ({said})", fix,
            )  # fmt: skip
            return
        back = secrets.token_hex(16)
        script = 'printf %s "$1" > "$2"'
        wrote = run_there(
            login, ["sh", "-c", script, "sh", back, os.path.join(here, "from-login")], timeout
        )
        if wrote.returncode != 0 or _read(os.path.join(here, "from-login")) != back:
            said = wrote.stderr.strip()[:200] or "not seen here"
            probe.fail(
                WORKDIR_CHECK, work_base, "",
                f"a file the login node writes in {here} does not arrive here ({said})",
                f"{fix}; the login account must be able to write in the work base",
            )  # fmt: skip
            return
    except SchedulerError as exc:
        probe.fail(WORKDIR_CHECK, work_base, "", exc.message, fix)
        return
    finally:
        shutil.rmtree(here, ignore_errors=True)
    probe.ok(WORKDIR_CHECK, work_base, "", "shared with the login node, both ways")


def _check_remote_root(login: LoginHost, probe: Probe, timeout: float) -> None:
    probe.start(WORKDIR_CHECK)
    root = login.remote_root or ""
    fix = f"create {root} on the login node, writable by {login.target}, or fix remote_root"
    try:
        done = run_there(
            login, ["sh", "-c", 'mkdir -p -- "$1" && test -w "$1"', "sh", root], timeout
        )
    except SchedulerError as exc:
        probe.fail(WORKDIR_CHECK, root, "", exc.message, fix)
        return
    if done.returncode != 0:
        said = done.stderr.strip()[:200] or "not writable"
        probe.fail(WORKDIR_CHECK, root, "", f"remote_root on the login node: {said}", fix)
        return
    probe.ok(WORKDIR_CHECK, root, "", "jobs are staged to the login node there")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read(256)
    except OSError:
        return None
