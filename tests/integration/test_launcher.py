"""The console script's fast path to the site entry, as SSH's forced command runs it, and what
each end loads at start.

``python -m bridge.launcher`` is what the ``mint-bridge`` console script runs (and what the
``local`` method starts): the forced command must behave exactly as through the click CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge.client.transports.base import PROTOCOL_COMMAND, ProcessChannel
from bridge.core.protocol import PROTOCOL_VERSION, FrameReader, FrameWriter

LAUNCHER = [sys.executable, "-m", "bridge.launcher"]


def site_config(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f'[site]\nname = "s"\nwork_base = "{tmp_path / "work"}"\n'
        f'log_file = "{tmp_path / "site.log"}"\n'
    )
    return path


def imported_modules(stderr: str) -> set[str]:
    """The modules ``-X importtime`` reported on ``stderr``."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if "|" in line}


def serve_ssh(*args: str, original: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    if original is not None:
        env["SSH_ORIGINAL_COMMAND"] = original
    return subprocess.run(
        [*LAUNCHER, "site", "serve-ssh", *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_refused_command_exits_77_without_importing_click(tmp_path: Path) -> None:
    config = site_config(tmp_path)
    proc = serve_ssh("--config", str(config), original="cat /etc/passwd")
    assert proc.returncode == 77
    assert "refused command 'cat /etc/passwd'" in proc.stderr
    assert "refused: this key only runs mint-bridge jobs" in (tmp_path / "site.log").read_text()
    imported = subprocess.run(
        [sys.executable, "-X", "importtime", *LAUNCHER[1:], "site", "serve-ssh",
         f"--config={config}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    modules = imported_modules(imported.stderr)
    assert imported.returncode == 77 and "bridge.site.ssh_entry" in modules
    assert not {"click", "bridge.cli", "psutil", "schedulers.local"} & modules


def test_a_shell_is_refused(tmp_path: Path) -> None:
    proc = serve_ssh(f"--config={site_config(tmp_path)}", original=None)
    assert proc.returncode == 77
    assert "interactive shells are not allowed" in proc.stderr


def test_an_unusable_config_exits_78(tmp_path: Path) -> None:
    proc = serve_ssh("--config", str(tmp_path / "missing.toml"), original=PROTOCOL_COMMAND)
    assert proc.returncode == 78
    assert (
        f"mint-bridge: site configuration error: site config {tmp_path / 'missing.toml'} "
        "does not exist" in proc.stderr
    )


def test_hello_through_both_forms_of_the_option(tmp_path: Path) -> None:
    config = site_config(tmp_path)
    for args in (["--config", str(config)], [f"--config={config}"]):
        proc = subprocess.Popen(
            [*LAUNCHER, "site", "serve-ssh", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=dict(os.environ, SSH_ORIGINAL_COMMAND=PROTOCOL_COMMAND),
        )  # fmt: skip
        channel = ProcessChannel(proc)
        FrameWriter(channel).write_json({"op": "hello", "protocol": PROTOCOL_VERSION})
        reply = FrameReader(channel).read_json()
        channel.close()
        assert reply["site"] == "s" and reply["protocol"] == PROTOCOL_VERSION
        assert proc.returncode == 0


def test_other_command_lines_reach_the_click_cli(tmp_path: Path) -> None:
    help_text = subprocess.run([*LAUNCHER, "site", "serve-ssh", "--help"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert help_text.returncode == 0 and "--config TEXT" in help_text.stdout
    missing = subprocess.run([*LAUNCHER, "site", "serve-ssh"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 64 and "Missing option '--config'" in missing.stderr
    version = subprocess.run([*LAUNCHER, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "mint-bridge, version" in version.stdout


def test_the_bridge_node_loads_no_retry_or_pbs_helpers_up_front() -> None:
    # tenacity only after a lost connection, psutil only inside a PBS job without qstat.
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import bridge.cli, bridge.client.run"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    modules = imported_modules(proc.stderr)
    assert proc.returncode == 0 and "bridge.client.channel_job" in modules
    assert not {"tenacity", "psutil", "bridge.site", "schedulers"} & modules
