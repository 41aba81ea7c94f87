"""The job summary ``mint-bridge run`` leaves beside each job log, and ``mint-bridge jobs``."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.client import job_log
from bridge.client.job_history import read_history
from bridge.core.errors import SiteUnreachable

FIRST = "11111111-2222-4333-8444-555555555555"
SECOND = "22222222-3333-4444-8555-666666666666"
OLD = "33333333-4444-4555-8666-777777777777"
run_log = logging.getLogger("bridge.client.run")


def run_one(directory: Path, job_id: str, site: str, code: int, reason: str) -> None:
    with job_log.recording(job_id, str(directory), site=site, command="fatigue",
                           output_dir=str(directory / "out")) as record:  # fmt: skip
        run_log.info("%s: running fatigue at site %s", job_id, site)
        summary = json.loads((directory / f"{job_id}.json").read_text())
        assert summary["exit_code"] is None and summary["ended_at"] is None  # written at start
        record.finished(code, reason)


def test_a_run_leaves_a_private_summary_the_history_reads(tmp_path: Path) -> None:
    run_one(tmp_path, FIRST, "rme-u-tokyo", 0, "completed")
    run_one(tmp_path, SECOND, "kousoku", 3, "the solver failed")
    summary = json.loads((tmp_path / f"{SECOND}.json").read_text())
    assert summary["schema"] == "mint-bridge.job/1"
    assert summary["site"] == "kousoku" and summary["command"] == "fatigue"
    assert summary["exit_code"] == 3 and summary["reason"] == "the solver failed"
    assert summary["output_dir"] == str(tmp_path / "out")
    assert summary["ended_at"] >= summary["started_at"]
    assert stat.S_IMODE(os.stat(tmp_path / f"{SECOND}.json").st_mode) == 0o600

    entries = read_history(str(tmp_path))
    assert [e.job_id for e in entries] == [SECOND, FIRST]
    assert entries[1].exit_code == 0 and entries[1].site == "rme-u-tokyo"


def test_a_bridge_error_is_summarised_with_its_exit_code(tmp_path: Path) -> None:
    with pytest.raises(SiteUnreachable), job_log.recording(FIRST, str(tmp_path), site="s",
                                                           command="c"):  # fmt: skip
        raise SiteUnreachable("no route to host")
    (entry,) = read_history(str(tmp_path))
    assert entry.exit_code == int(SiteUnreachable("x").exit_code)
    assert entry.reason == "no route to host" and entry.ended_at is not None


def test_a_log_without_summary_is_read_from_its_lines(tmp_path: Path) -> None:
    (tmp_path / f"{OLD}.log").write_text(
        f"2026-11-30 08:00:00,123 INFO {OLD}: running fatigue at site rme-u-tokyo\n"
        f"2026-11-30 08:05:00,456 INFO {OLD}: exit 0: completed\n"
    )
    (tmp_path / "notes.txt").write_text("the admin's own file\n")
    (entry,) = read_history(str(tmp_path))
    assert (entry.site, entry.command, entry.exit_code, entry.reason) == (
        "rme-u-tokyo", "fatigue", 0, "completed")  # fmt: skip
    assert entry.duration == 300


def test_jobs_list_and_show_on_the_command_line(tmp_path: Path) -> None:
    run_one(tmp_path, FIRST, "rme-u-tokyo", 0, "completed")
    run_one(tmp_path, SECOND, "kousoku", 3, "the solver failed")
    runner = CliRunner()
    env = {job_log.ENV_DIR: str(tmp_path)}

    result = runner.invoke(main, ["jobs", "list"], env=env)
    assert result.exit_code == 0, result.output
    header, newest, older = result.output.splitlines()
    assert header.split()[:3] == ["JOB", "SITE", "COMMAND"]
    assert newest.startswith(SECOND) and "the solver failed" in newest
    assert older.startswith(FIRST)

    result = runner.invoke(main, ["jobs", "list", "--site", "kousoku", "--json"], env=env)
    (only,) = json.loads(result.output)["jobs"]
    assert only["job_id"] == SECOND and only["exit_code"] == 3

    result = runner.invoke(main, ["jobs", "show", SECOND, "--log-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "the solver failed" in result.output
    assert "running fatigue at site kousoku" in result.output

    result = runner.invoke(main, ["jobs", "show", OLD], env=env)
    assert result.exit_code == 1 and "no log of job" in result.output
