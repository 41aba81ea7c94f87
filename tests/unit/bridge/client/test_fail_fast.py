"""Text before the first frame, the job log, and click's usage errors: the pieces of failing
fast on the bridge node, each on its own."""

from __future__ import annotations

import logging
import os
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.client import job_log
from bridge.client.transports.base import site_reader
from bridge.core.errors import AccountUnusable, ExitCode, ProtocolError, ShellNotQuiet
from bridge.core.protocol import KIND_JSON, FrameReader
from tests.support.frames import LoopbackChannel

FRAME = struct.pack(">cI", KIND_JSON, 2) + b"{}"


@pytest.mark.parametrize(
    "text",
    [b"Last login: Mon Nov 24 10:00:00 2025\n", b"Just so you know\n", b"hi there\n"],
)
def test_text_before_the_first_frame_blames_the_login_shell(text: bytes) -> None:
    with pytest.raises(ShellNotQuiet) as caught:
        site_reader(LoopbackChannel(text + FRAME)).read_json()
    quoted = text.decode().strip()
    assert f"the site account's login shell printed {quoted!r} before the protocol" in str(
        caught.value
    )
    assert "keep the account's shell quiet" in str(caught.value)
    assert caught.value.exit_code == ExitCode.PROTOCOL_ERROR


def test_a_nologin_shell_is_an_account_error() -> None:
    with pytest.raises(AccountUnusable, match="no-login shell"):
        site_reader(LoopbackChannel(b"This account is currently not available.\n")).read_json()


def test_text_after_the_first_frame_and_a_plain_reader_stay_protocol_errors() -> None:
    reader = site_reader(LoopbackChannel(FRAME + b"Last login\n"))
    assert reader.read_json() == {}
    with pytest.raises(ProtocolError, match="unknown frame kind") as caught:
        reader.read_json()
    assert not isinstance(caught.value, ShellNotQuiet)
    with pytest.raises(ProtocolError, match="unknown frame kind"):
        FrameReader(LoopbackChannel(b"Last login\n")).read_json()


def test_job_log_is_private_records_info_and_expires(tmp_path: Path) -> None:
    directory = tmp_path / "jobs"
    old = directory / "00000000-0000-4000-8000-000000000000.log"
    directory.mkdir(mode=0o755)
    old.write_text("old\n")
    keep = directory / "notes.txt"
    keep.write_text("the admin's\n")
    past = time.time() - (job_log.RETENTION_DAYS + 1) * 86400
    os.utime(old, (past, past))
    os.utime(keep, (past, past))
    job_id = "11111111-2222-4333-8444-555555555555"
    with job_log.recording(job_id, str(directory)) as record:
        logging.getLogger("bridge.client.run").info("%s: started at site s", job_id)
        record.finished(3, "the solver failed")
    assert record.path == str(directory / f"{job_id}.log")
    text = Path(record.path).read_text()
    assert "started at site s" in text and "exit 3: the solver failed" in text
    assert stat.S_IMODE(os.stat(record.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert not old.exists() and keep.exists()


def test_an_unwritable_log_dir_costs_no_job(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with job_log.recording("11111111-2222-4333-8444-555555555555", str(blocker / "x")) as rec:
        assert rec.path is None


def test_log_dir_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(job_log.ENV_DIR, "/somewhere")
    assert job_log.log_dir() == "/somewhere"
    monkeypatch.delenv(job_log.ENV_DIR)
    assert job_log.log_dir() == os.path.expanduser(job_log.DEFAULT_DIR)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["run"], ExitCode.USAGE),
        (["run", "--site", "s", "--command", "c", "--bogus"], ExitCode.USAGE),
        (["no-such-subcommand"], ExitCode.USAGE),
        (["run", "--help"], 0),
        (["--version"], 0),
        (["health", "--bogus"], 3),  # the monitoring convention: unknown
    ],
)
def test_usage_errors_exit_64(args: list[str], code: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args], capture_output=True, timeout=60
    )
    assert done.returncode == code, done.stderr
