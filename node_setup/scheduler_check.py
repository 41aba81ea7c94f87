"""Does a scheduler found on PATH answer? Setup asks its status command before choosing it.

A login node often has ``sbatch`` and ``sinfo`` installed although no controller answers (a
package pulled in by something else, a cluster being built, the wrong ``SLURM_CONF``). Jobs
sent to such a scheduler would all fail, so setup only picks a scheduler whose read-only status
command (``sinfo`` for Slurm, ``qstat -B`` for PBS Pro and Torque) succeeds within a short
timeout, and says why it passed over the others. Nothing here submits, changes or cancels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

STATUS_TIMEOUT = 5.0  # seconds: a controller that answers at all does so in well under a second
MAX_REASON = 300  # characters of the command's own message kept in the reason

# The read-only command that needs the server, and what is not answering when it fails.
STATUS_COMMANDS: dict[str, tuple[list[str], str, str]] = {
    "slurm": (["sinfo", "-h", "-o", "%P"], "sbatch", "slurmctld"),
    "pbspro": (["qstat", "-B"], "qsub", "the PBS server"),
    "torque": (["qstat", "-B"], "qsub", "pbs_server"),
}


@dataclass(frozen=True)
class SchedulerCheck:
    name: str
    answers: bool
    reason: str = ""  # why it does not answer, ready to print after "scheduler X: "


def check(
    name: str,
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = STATUS_TIMEOUT,
) -> SchedulerCheck:
    """Run ``name``'s status command (found on ``path``) and tell whether its server answered."""
    argv, submit, server = STATUS_COMMANDS[name]
    program = shutil.which(argv[0], path=path)
    if program is None:
        return SchedulerCheck(name, False, f"{argv[0]} is not on PATH")
    run_env = dict(os.environ if env is None else env)
    if path is not None:
        run_env["PATH"] = path
    shown = " ".join(argv)
    try:
        done = subprocess.run(
            [program, *argv[1:]],
            env=run_env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        why = f"`{shown}` did not answer within {timeout:g} s"
        return SchedulerCheck(name, False, _silent(submit, server, why))
    except OSError as exc:
        return SchedulerCheck(name, False, f"cannot run {program}: {exc}")
    if done.returncode == 0:
        return SchedulerCheck(name, True)
    message = " ".join((done.stderr or done.stdout).split())[:MAX_REASON] or "no message"
    why = f"`{shown}` exited {done.returncode}: {message}"
    return SchedulerCheck(name, False, _silent(submit, server, why))


def _silent(submit: str, server: str, why: str) -> str:
    return f"{submit} is on PATH but {server} does not answer: {why}"


def check_all(
    names: tuple[str, ...],
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = STATUS_TIMEOUT,
) -> list[SchedulerCheck]:
    # Torque and PBS Pro share `qstat -B`: ask the server once for both.
    results: dict[tuple[str, ...], SchedulerCheck] = {}
    checks: list[SchedulerCheck] = []
    for name in names:
        key = tuple(STATUS_COMMANDS[name][0])
        first = results.get(key)
        if first is None:
            first = results[key] = check(name, path, env, timeout)
        checks.append(SchedulerCheck(name, first.answers, first.reason))
    return checks
