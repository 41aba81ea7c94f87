"""``site.login_shell``: what the site account's login shell costs every SSH job before it starts.

sshd runs every command, forced commands included, as ``<login shell> -c '<command>'``, and
Debian's bash then reads ~/.bashrc although it is not interactive (it sees ``SSH_CLIENT``, or a
socket on stdin). Whatever that file does (``pyenv init``, conda, module loads) delays each job
before ``mint-bridge site serve-ssh`` starts, and whatever it prints to stdout lands in front of
the protocol's first frame. The check runs ``<shell> -c true`` the way sshd does and times it.

The account's home is ``~`` as the rest of node_setup sees it (``$HOME``, else the passwd entry),
the home whose ``.ssh/authorized_keys`` ``setup site`` edits. Nothing here changes anything.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

from node_setup.health.result import Probe, Status, Value

CHECK = "site.login_shell"
# A bare bash or dash starts in a few ms; an rc file that runs pyenv or conda costs 0.1-1 s.
SLOW = 0.05
RUNS = 3  # odd, so the median is one real run; the first may pay for a cold cache
RUN_TIMEOUT = 5.0  # a shell that needs longer waits for input or hangs: no job would start
NO_LOGIN = {"nologin", "false"}  # /usr/sbin/nologin, /bin/false: sshd can run nothing
# What sshd puts in a session's environment (PATH as Debian's sshd sets it); fake addresses.
SSHD_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
SSH_CLIENT = "127.0.0.1 50000 22"
SSH_CONNECTION = "127.0.0.1 50000 127.0.0.1 22"


@dataclass(frozen=True)
class Account:
    name: str
    shell: str
    home: str


def this_account() -> Account:
    entry = pwd.getpwuid(os.getuid())
    # An empty shell field means /bin/sh (passwd(5)), and sshd uses /bin/sh then.
    return Account(entry.pw_name, entry.pw_shell or "/bin/sh", os.path.expanduser("~"))


@dataclass(frozen=True)
class ShellStartup:
    seconds: float  # median of the runs; the timeout when a run did not finish
    returncode: int | None  # of the last run; None when it did not finish in time
    stdout: bytes  # what the shell printed before the command: sshd would pass it on
    stderr: str  # its last line, for a shell that fails


def sshd_env(account: Account) -> dict[str, str]:
    """A session's environment as sshd builds it: not ours, so no SHLVL, PS1 or PYENV_*."""
    return {
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": account.shell,
        "PATH": SSHD_PATH,
        "SSH_CLIENT": SSH_CLIENT,
        "SSH_CONNECTION": SSH_CONNECTION,
    }


def measure_startup(
    shell: str, env: Mapping[str, str], runs: int = RUNS, timeout: float = RUN_TIMEOUT
) -> ShellStartup:
    """``shell -c true`` as sshd runs it (``env``, stdin a socket, no tty): median of ``runs``.

    Stops early at a run that fails or times out, and once the runs so far took ``timeout``.
    """
    times: list[float] = []
    while True:
        seconds, returncode, out, err = _run_once(shell, env, timeout)
        times.append(seconds)
        if returncode != 0 or len(times) >= runs or sum(times) >= timeout:
            break
    last = (err.decode("utf-8", "replace").strip().splitlines() or [""])[-1][:300]
    return ShellStartup(statistics.median(times), returncode, out, last)


def _run_once(
    shell: str, env: Mapping[str, str], timeout: float
) -> tuple[float, int | None, bytes, bytes]:
    # Files, not pipes: a daemon that the rc file starts may keep a pipe open long after the
    # shell is gone, and the time that counts is the shell's own.
    ours, theirs = socket.socketpair()
    with ours, theirs, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            [shell, "-c", "true"],
            stdin=theirs.fileno(),
            stdout=out,
            stderr=err,
            env=dict(env),
            start_new_session=True,  # no tty, as under sshd; and one group to kill
        )
        try:
            returncode: int | None = proc.wait(timeout)
            seconds = time.monotonic() - start
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # it ended in the meantime
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode, seconds = None, timeout
        out.seek(0)
        err.seek(0)
        return seconds, returncode, out.read(4096), err.read()[-4096:]


def shell_problem(shell: str) -> str:
    """Why sshd could never start a command through ``shell``; empty when it can."""
    if os.path.basename(shell) in NO_LOGIN:
        return "is a no-login shell"
    if not os.path.isfile(shell):
        return "does not exist"
    if not os.access(shell, os.X_OK):
        return "is not executable"
    return ""


@dataclass(frozen=True)
class Verdict:
    status: Status
    value: Value
    unit: str
    message: str
    fix: str = ""


def assess(account: Account, timeout: float = RUN_TIMEOUT) -> Verdict:
    """What sshd pays for ``account``'s login shell before each job, and what to do about it."""
    shell = account.shell
    problem = shell_problem(shell)
    if problem:
        return Verdict(
            Status.FAIL,
            shell,
            "",
            f"the login shell of {account.name}, {shell}, {problem}: "
            "sshd could never start the forced command",
            f"give the account a shell (as root: usermod -s /bin/sh {account.name})",
        )
    try:
        found = measure_startup(shell, sshd_env(account), timeout=min(RUN_TIMEOUT, timeout))
    except OSError as exc:
        return Verdict(
            Status.FAIL,
            shell,
            "",
            f"cannot run the login shell of {account.name}, {shell}: {exc}",
            f"give the account a shell that runs (as root: usermod -s /bin/sh {account.name})",
        )
    seconds = round(found.seconds, 3)
    if found.returncode is None:
        return Verdict(
            Status.FAIL,
            seconds,
            "s",
            f"`{shell} -c true` did not finish within {seconds:g} s as sshd runs it",
            f"no job can start: {_remedies(account)}",
        )
    if found.returncode != 0:
        return Verdict(
            Status.FAIL,
            found.returncode,
            "exit status",
            f"`{shell} -c true` fails as sshd runs it: {found.stderr or 'no message'}",
            f"fix the error in {_rc_file(shell)}{_or_sh(account)}",
        )
    if found.stdout:
        first = (found.stdout.decode("utf-8", "replace").splitlines() or [""])[0][:60]
        return Verdict(
            Status.FAIL,
            len(found.stdout),
            "B",
            f"{shell} prints to stdout before any command runs ({first!r}): "
            "the bridge would read it as a broken frame",
            f"print nothing from {_rc_file(shell)} when not interactive: {_remedies(account)}",
        )
    if seconds >= SLOW:
        return Verdict(
            Status.WARN,
            seconds,
            "s",
            f"every SSH job waits {seconds:g} s for {shell} to start "
            "(sshd runs the forced command through it)",
            f"{_remedies(account)}; it saves about {seconds:g} s a job",
        )
    return Verdict(Status.OK, seconds, "s", f"{shell} starts in {seconds * 1000:.0f} ms")


def check_login_shell(probe: Probe, timeout: float, account: Account | None = None) -> None:
    account = account or this_account()
    probe.start(CHECK, f"{account.shell} hangs before any command runs: {_remedies(account)}")
    verdict = assess(account, timeout)
    probe.add(CHECK, verdict.status, verdict.value, verdict.unit, verdict.message, verdict.fix)


def startup_advice(account: Account | None = None) -> str | None:
    """One line for ``setup site`` when the account's shell delays or breaks SSH jobs."""
    verdict = assess(account or this_account())
    return None if verdict.status is Status.OK else f"{verdict.message}; {verdict.fix}"


def _rc_file(shell: str) -> str:
    name = os.path.basename(shell)
    return {"bash": "~/.bashrc", "zsh": "~/.zshenv"}.get(name, f"the start-up files of {name}")


def _remedies(account: Account) -> str:
    name = os.path.basename(account.shell)
    if name == "bash":
        light = (
            "keep ~/.bashrc light, or return early at its top when not interactive "
            "(`case $- in *i*) ;; *) return;; esac`)"
        )
    elif name == "zsh":
        light = "keep ~/.zshenv light (zsh reads it for every command)"
    else:
        light = f"keep {_rc_file(account.shell)} light"
    return light + _or_sh(account)


def _or_sh(account: Account) -> str:
    if os.path.basename(account.shell) == "sh":
        return ""
    return f", or give the account /bin/sh (as root: usermod -s /bin/sh {account.name})"
