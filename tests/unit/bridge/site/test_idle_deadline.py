"""The site entry closes a connection that sends nothing before its job starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.core.errors import ConfigError
from bridge.core.protocol import HEADER, KIND_JSON, PROTOCOL_VERSION
from bridge.site.config import load_site_config
from bridge.site.session import EXIT_IDLE
from tests.support.site_toml import write_site_toml


def _site(tmp_path: Path, idle_timeout: object = "1s") -> Path:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    site: dict[str, object] = {
        "name": "idle-site", "work_base": work, "log_file": tmp_path / "site.log",
    }  # fmt: skip
    if idle_timeout is not None:
        site["idle_timeout"] = idle_timeout
    commands = {"echo": {"program": "/bin/echo", "args": ["hi"]}}
    return write_site_toml(tmp_path / "site.toml", site=site, commands=commands)


def _serve(config: Path, first_bytes: bytes) -> tuple[int, bytes]:
    """The site entry over pipes; the bridge's end writes ``first_bytes`` and then stays open
    without sending more, as a stuck or hostile client does."""
    env = dict(os.environ, SSH_ORIGINAL_COMMAND=f"mint-bridge-protocol {PROTOCOL_VERSION}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "site", "serve-ssh", "--config", str(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(first_bytes)
    proc.stdin.flush()
    try:
        out = proc.stdout.read()  # ends when the site entry exits; stdin is still open
        return proc.wait(timeout=30), out
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_silent_connection_is_closed_with_the_idle_exit_code(tmp_path: Path) -> None:
    code, out = _serve(_site(tmp_path), b"")
    assert code == EXIT_IDLE == 75
    assert b"PeerIdle" in out and b"sent nothing for 1 s" in out
    log = (tmp_path / "site.log").read_text()
    assert "-: peer stdin idle: sent nothing for 1 s before the job started" in log


def test_half_a_frame_then_silence_is_closed(tmp_path: Path) -> None:
    # A header announcing 100 bytes of JSON, then only 3 of them.
    code, _ = _serve(_site(tmp_path), HEADER.pack(KIND_JSON, 100) + b'{"o')
    assert code == EXIT_IDLE
    assert "idle" in (tmp_path / "site.log").read_text()


def test_idle_timeout_defaults_to_60_seconds(tmp_path: Path) -> None:
    assert load_site_config(str(_site(tmp_path, None))).idle_timeout == 60.0
    assert load_site_config(str(_site(tmp_path, "90s"))).idle_timeout == 90.0


@pytest.mark.parametrize("value", ["0s", "2h", "soon"])
def test_idle_timeout_out_of_range_names_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_site_config(str(_site(tmp_path, value)))
    assert "idle_timeout" in err.value.message
