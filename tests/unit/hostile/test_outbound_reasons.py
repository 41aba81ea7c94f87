"""Reasons that leave the site never carry a site path: E2BIG, a missing program, no permission."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core import outbound
from bridge.core.job import JobOutcome, JobState
from schedulers.local import LocalScheduler
from tests.unit.schedulers.test_local import handle_for, make_spec, wait_final

SECRET_DIR = "opt-private-solver-7f3a"


def _program(tmp_path: Path, mode: int) -> Path:
    directory = tmp_path / SECRET_DIR
    directory.mkdir()
    program = directory / "solver"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(mode)
    return program


def _outbound(outcome: JobOutcome) -> str:
    reason = outcome.to_message()["reason"]
    assert isinstance(reason, str)
    return reason


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("e2big", "cannot start program: argument list too long (E2BIG)"),
        ("missing", "cannot start program: no such file or directory (ENOENT)"),
        ("permission", "cannot start program: permission denied (EACCES)"),
    ],
)
def test_a_program_that_cannot_start_is_named_without_its_path(
    tmp_path: Path, case: str, words: str
) -> None:
    # No execute bit at all: execve refuses it even for root.
    program = _program(tmp_path, 0o600 if case == "permission" else 0o755)
    argv = [str(program)]
    if case == "e2big":
        argv.append("x" * (1024 * 1024))  # one 1 MiB parameter: over MAX_ARG_STRLEN
    if case == "missing":
        argv = [str(program) + "-gone"]
    scheduler = LocalScheduler()
    spec = make_spec(tmp_path, argv)
    outcome = wait_final(scheduler, handle_for(spec, scheduler.submit(spec)))
    assert outcome.state is JobState.FAILED
    assert outcome.exit_code == 127
    assert outcome.reason == words
    assert SECRET_DIR not in _outbound(outcome)
    assert str(tmp_path) not in _outbound(outcome)


SCRUBBED = [
    ("oserror", "cannot start program: [Errno 7] Argument list too long: '/opt/site/bin/solver'",
     "cannot start program: [Errno 7] Argument list too long: '<site path>'"),
    ("home", "config ~/.config/site.toml unreadable", "config <site path> unreadable"),
    ("spool", "slurmstepd: error: /var/spool/slurmd/job42/slurm_script: No such file",
     "slurmstepd: error: <site path>: No such file"),
    ("relative-kept", "result out/a.dat is not a regular file",
     "result out/a.dat is not a regular file"),
    ("mime-kept", "text/plain is fine", "text/plain is fine"),
]  # fmt: skip


@pytest.mark.parametrize(("reason", "expected"), [c[1:] for c in SCRUBBED],
                         ids=[c[0] for c in SCRUBBED])  # fmt: skip
def test_scrub_replaces_site_paths_and_keeps_work_dir_names(reason: str, expected: str) -> None:
    assert outbound.scrub(reason) == expected
    outcome = JobOutcome(JobState.FAILED, exit_code=1, reason=reason)
    assert outcome.to_message()["reason"] == expected


def test_a_huge_reason_is_cut_before_it_leaves() -> None:
    reason = outbound.scrub("solver said: " + "/x" * 500_000)
    assert len(reason) <= outbound.MAX_REASON
    assert "/x" not in reason


_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)


@given(st.text(max_size=80), st.lists(_segment, min_size=1, max_size=5), st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_no_absolute_path_survives_scrub(before: str, parts: list[str], after: str) -> None:
    path = "/" + "/".join(parts) + "/" + SECRET_DIR
    scrubbed = outbound.scrub(f"{before} {path} {after}")
    assert SECRET_DIR not in scrubbed or SECRET_DIR in before + after
