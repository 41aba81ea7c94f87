"""Behind a real sshd: a session that sends nothing is closed by the site entry, and logged."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.protocol import PROTOCOL_VERSION
from bridge.site.session import EXIT_IDLE
from tests.support.site_toml import write_site_toml
from tests.support.sshd import Sshd, start_sshd_for_test


@pytest.fixture()
def idle_sshd(tmp_path: Path) -> Iterator[Sshd]:
    work = tmp_path / "work"
    work.mkdir()
    config = write_site_toml(
        tmp_path / "site.toml",
        site={
            "name": "idle-site", "work_base": work, "log_file": tmp_path / "site.log",
            "idle_timeout": "2s",
        },
        commands={"echo": {"program": "/bin/echo", "args": ["hi"]}},
    )  # fmt: skip
    server = start_sshd_for_test(tmp_path / "sshd", config)
    yield server
    server.stop()


def test_idle_protocol_session_is_closed_and_logged(idle_sshd: Sshd, tmp_path: Path) -> None:
    # The forced key with the protocol request and a stdin that stays open but silent, as a
    # hung client holds it: sshd alone would keep this open for ever.
    argv = idle_sshd.ssh_argv(f"mint-bridge-protocol {PROTOCOL_VERSION}")
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()  # ends when the site entry exits; stdin is still open
        code = proc.wait(timeout=30)
    finally:
        if proc.stdin:
            proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == EXIT_IDLE
    assert b"sent nothing for 2 s" in out
    log = (tmp_path / "site.log").read_text()
    assert "peer 127.0.0.1:" in log and "idle: sent nothing for 2 s" in log
