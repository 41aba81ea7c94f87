"""A job's work dir staged to a login node that shares no filesystem with the gateway.

With ``[scheduler] shared_workdir = false`` a job runs in its own dir on the login node,
``<remote_root>/<job id>``, laid out exactly as its work dir here (control dir included): the
inputs and the job script are copied there before the submit, the whole dir is copied back
once the scheduler says the job ended, and then removed. Both copies are tar streams over the
same shared SSH connection as the scheduler commands (``schedulers.login_host``).

Never follows a symlink out of a work dir: one pointing outside is left out when staging in,
and a job's results are unpacked with tarfile's ``data`` filter, which refuses absolute names,
``..``, links leading outside and device files; a refused member is skipped and logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import subprocess
import tarfile
import threading
from collections.abc import Callable
from typing import IO

from bridge.core.errors import SchedulerError
from bridge.core.workdir_files import (
    BATCH_SCRIPT_FILE,
    CONTROL_DIR,
    EXIT_CODE_FILE,
    SCHEDULER_OUTPUT_FILE,
    SELF_ID_FILE,
    STDERR_FILE,
    STDOUT_FILE,
)
from schedulers.base import JobSpec
from schedulers.login_host import LoginHost, classify, command_argv

log = logging.getLogger(__name__)

# The login node's side of each copy: POSIX sh and tar, every path an argument ("$1"), so
# nothing of a job's paths is ever parsed by the remote shell.
_UNPACK = 'mkdir -p -- "$1" && exec tar -xf - -C "$1"'
_PACK = 'if [ -d "$1" ]; then exec tar -cf - -C "$1" .; fi'
_REMOVE = 'exec rm -rf -- "$1"'
# Of the control dir, only the job script goes there and only what the job wrote comes back:
# the site's own records here (native id, request, outcome) are never overwritten by a copy.
_STAGED_CONTROL = {BATCH_SCRIPT_FILE}
_RETURNED_CONTROL = {EXIT_CODE_FILE, SELF_ID_FILE, SCHEDULER_OUTPUT_FILE, STDOUT_FILE, STDERR_FILE}


def remote_dir(login: LoginHost, job_id: str) -> str:
    if login.remote_root is None:
        raise SchedulerError("shared_workdir = false needs [scheduler] remote_root")
    return posixpath.join(login.remote_root, job_id)


def remote_spec(login: LoginHost, spec: JobSpec) -> JobSpec:
    """``spec`` with every path moved from the work dir here to the job's dir there."""
    target = remote_dir(login, spec.job_id)

    def move(path: str) -> str:
        relative = os.path.relpath(path, spec.workdir)
        if relative == ".." or relative.startswith("../"):
            raise SchedulerError(
                f"{spec.job_id}: {path} is outside the work dir and cannot be staged"
            )
        return target if relative == "." else posixpath.join(target, relative)

    return dataclasses.replace(
        spec,
        workdir=target,
        control_dir=move(spec.control_dir),
        stdout_path=move(spec.stdout_path),
        stderr_path=move(spec.stderr_path),
    )


def stage_in(login: LoginHost, spec: JobSpec, timeout: float) -> None:
    """Copy the work dir (inputs, control dir, job script) to the job's dir on the login node."""
    target = remote_dir(login, spec.job_id)
    proc = _ssh(login, ["sh", "-c", _UNPACK, "sh", target], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    stdin = proc.stdin
    writer = _Copy(lambda: _pack_local(spec.workdir, stdin))
    writer.start()
    _finish(login, proc, writer, timeout, f"{spec.job_id}: staging to {target}")
    log.info("%s: work dir staged to %s on %s", spec.job_id, target, login.where)


def stage_out(login: LoginHost, job_id: str, workdir: str, timeout: float, remove: bool) -> None:
    """Copy the job's dir back into its work dir here; with ``remove``, then delete it there.

    Nothing to copy (already fetched and removed) is not an error, so a re-attached site
    process can ask again."""
    source = remote_dir(login, job_id)
    proc = _ssh(login, ["sh", "-c", _PACK, "sh", source], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = _Copy(lambda: _unpack_local(stdout, workdir, job_id))
    reader.start()
    _finish(login, proc, reader, timeout, f"{job_id}: fetching results from {source}")
    if remove:
        done = _ssh(login, ["sh", "-c", _REMOVE, "sh", source])
        _finish(login, done, None, timeout, f"{job_id}: removing {source}")
        log.info("%s: results fetched from %s on %s and removed there", job_id, source, login.where)


class _Copy(threading.Thread):
    """One side of a copy, run next to the ``ssh`` that carries it; ``failed`` says why not."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.failed: str | None = None

    def run(self) -> None:
        try:
            self.work()
        except tarfile.ReadError as exc:
            if "empty" not in str(exc):  # empty: the job's dir was already fetched and removed
                self.failed = f"unreadable results: {exc}"
        except OSError as exc:  # a full disk here, or the remote tar gave up (see its stderr)
            self.failed = f"copy failed: {exc}"


def _ssh(
    login: LoginHost, argv: list[str], stdin: int | None = None, stdout: int | None = None
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            command_argv(login, argv),
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise SchedulerError(
            f"cannot run ssh for login host {login.where}: {exc.strerror}; install the OpenSSH "
            "client (apt-get install openssh-client)"
        ) from exc


def _finish(
    login: LoginHost, proc: subprocess.Popen[bytes], copy: _Copy | None, timeout: float, what: str
) -> None:
    """Wait for the ``ssh`` of a copy (killed after ``timeout``) and raise what went wrong."""
    assert proc.stderr is not None
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        stderr = proc.stderr.read().decode("utf-8", "replace")
        code = proc.wait()
        if copy is not None:
            copy.join()
    finally:
        timed_out = not killer.is_alive()
        killer.cancel()
    if timed_out:
        raise SchedulerError(f"{what}: timed out after {timeout:g} s", transient=True)
    failure = classify(login, code, stderr, "tar")
    if failure is not None:
        raise SchedulerError(f"{what}: {failure.message}", transient=failure.transient)
    failed = copy.failed if copy is not None else None
    if code != 0 or failed:
        raise SchedulerError(f"{what}: {stderr.strip()[:300] or failed or f'exit {code}'}")


def _pack_local(workdir: str, sink: IO[bytes]) -> None:
    try:
        with tarfile.open(fileobj=sink, mode="w|") as archive:
            archive.add(workdir, arcname=".", filter=_inside(workdir))
    finally:
        sink.close()


def _inside(workdir: str) -> Callable[[tarfile.TarInfo], tarfile.TarInfo | None]:
    """A tarfile filter leaving out symlinks that lead outside the work dir."""
    root = os.path.realpath(workdir)

    def check(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not _control_allowed(member.name, _STAGED_CONTROL):
            return None
        if member.issym():
            here = os.path.join(root, os.path.dirname(member.name))
            target = os.path.realpath(os.path.join(here, member.linkname))
            if os.path.commonpath([root, target]) != root:
                log.warning("%s: symlink %s leads outside; not staged", workdir, member.name)
                return None
        return member

    return check


def _unpack_local(stream: IO[bytes], workdir: str, job_id: str) -> None:
    def data_only(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        if not _control_allowed(member.name, _RETURNED_CONTROL):
            return None
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError as exc:
            log.warning("%s: result %s skipped: %s", job_id, member.name, exc)
            return None

    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            # Safe: every member passes the data filter (see the module docstring).
            archive.extractall(workdir, filter=data_only)  # noqa: S202
    finally:
        stream.close()


def _control_allowed(name: str, allowed: set[str]) -> bool:
    """Whether a member is outside the control dir, is the dir itself, or one of ``allowed``."""
    parts = posixpath.normpath(name).split("/")
    if parts[0] != CONTROL_DIR:
        return True
    return len(parts) == 1 or (len(parts) == 2 and parts[1] in allowed)
