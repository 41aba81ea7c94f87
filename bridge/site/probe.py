"""The built-in probe job, as a site answers it (``mint-bridge health --probe``).

A probe arrives like any job, over SSH (``bridge.site.session``) or from the broker
(``bridge.site.pulled_job``), and is accepted, staged and returned through the same steps: a
private work dir under ``work_base``, the input received and verified there, the results
collected by a return rule and sent back. Only the run differs: instead of starting a program
through a scheduler, ``answer`` copies the input to ``PROBE_OUTPUT`` while hashing it and
writes ``PROBE_REPORT`` (the hash, the work base, and each configured program that could not
run, with its command and path). The entry removes the work dir once it is delivered.

Never: run a site program or a scheduler command, accept parameters or any input but the one
small ``PROBE_INPUT``, or answer at all when the site config says ``allow_probe = false``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

from bridge import __version__
from bridge.core import defaults
from bridge.core.errors import CommandNotAllowed, InputRejected, StagingError
from bridge.core.job import JobOutcome, JobRequest, JobState
from bridge.core.probe import (
    PROBE_COMMAND,
    PROBE_INPUT,
    PROBE_MAX_INPUT,
    PROBE_OUTPUT,
    PROBE_REPORT,
    ProbeReport,
    ProgramProblem,
)
from bridge.core.results import ReturnRule
from bridge.site.accepted_job import AcceptedJob
from bridge.site.config import CommandSpec, SiteConfig
from bridge.site.programs import program_problems
from bridge.site.workdir import WorkDir

log = logging.getLogger(__name__)

#: The native id a probe is reported started under. Its work dir records none (no scheduler
#: ever holds it), so a probe dir left by a killed entry counts as never started, and
#: ``site cleanup`` removes it after the retention time like any such dir.
NATIVE_ID = "probe"


def is_probe(request: JobRequest) -> bool:
    return request.command == PROBE_COMMAND


def accept(site: SiteConfig, request: JobRequest) -> AcceptedJob:
    """The probe as an accepted job, or the refusal a bridge sees (probes off, bad request)."""
    if not site.allow_probe:
        raise CommandNotAllowed(
            f"site {site.name} does not answer probes ([site] allow_probe = false in its "
            "config); ask the site admin to allow them, or test it with a real job",
            field="command",
        )
    if request.params:
        raise InputRejected("the probe takes no parameters", field="params")
    if [i.name for i in request.inputs] != [PROBE_INPUT]:
        raise InputRejected(f"the probe takes exactly one input, {PROBE_INPUT}", field="inputs")
    if request.inputs[0].size > PROBE_MAX_INPUT:
        raise InputRejected(
            f"the probe's input is limited to {PROBE_MAX_INPUT} bytes", field="inputs"
        )
    command = CommandSpec(
        name=PROBE_COMMAND,
        program="",  # never run: ``answer`` is the probe's whole run
        description="built-in probe",
        returns=ReturnRule((PROBE_OUTPUT, PROBE_REPORT)),
        inputs=(PROBE_INPUT,),
        config_dir=os.path.dirname(os.path.abspath(site.path)),
    )
    return AcceptedJob(request, command, {}, WorkDir(site.work_base, request.job_id))


def answer(site: SiteConfig, job: AcceptedJob) -> tuple[JobOutcome, bytes]:
    """Run the probe in its work dir (the input staged there): the outcome and the log text."""
    wd = job.workdir
    try:
        dir_fd = os.open(wd.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StagingError(f"cannot open the probe's work dir {wd.path}: {exc.strerror}") from exc
    try:
        sha256, size = _copy(dir_fd)
        problems = tuple(ProgramProblem(*p) for p in program_problems(site))
        report = ProbeReport(
            site=site.name,
            version=__version__,
            config=os.path.abspath(site.path),
            work_base=site.work_base,
            sha256=sha256,
            size=size,
            programs=problems,
        )
        _write(dir_fd, PROBE_REPORT, json.dumps(report.to_json(), indent=2).encode() + b"\n")
    finally:
        os.close(dir_fd)
    lines = [f"probe: {size} bytes copied in {wd.path}; SHA-256 {sha256}"]
    lines += [f"warning: command {p.command}: program {p.program} {p.problem}" for p in problems]
    log.info("%s: probe answered (%d program problems)", wd.job_id, len(problems))
    outcome = JobOutcome(JobState.COMPLETED, exit_code=0, reason="the probe was answered")
    return outcome, ("\n".join(lines) + "\n").encode()


def _copy(dir_fd: int) -> tuple[str, int]:
    """Copy the input to the output inside the work dir, never through a symlink."""
    digest = hashlib.sha256()
    size = 0
    try:
        source = os.open(PROBE_INPUT, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            target = _create(dir_fd, PROBE_OUTPUT)
            try:
                while chunk := os.read(source, defaults.CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
                    _write_all(target, chunk)
            finally:
                os.close(target)
        finally:
            os.close(source)
    except OSError as exc:
        raise StagingError(f"the probe cannot copy its input: {exc.strerror}") from exc
    return digest.hexdigest(), size


def _write(dir_fd: int, name: str, data: bytes) -> None:
    try:
        fd = _create(dir_fd, name)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StagingError(f"the probe cannot write {name}: {exc.strerror}") from exc


def _create(dir_fd: int, name: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags, 0o600, dir_fd=dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


__all__ = ["NATIVE_ID", "accept", "answer", "is_probe"]
