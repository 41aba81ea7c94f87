"""What ``mint-bridge run`` prints: progress of big files through a pipe (lines) and through a
pseudo-terminal (a bar), ``--quiet`` and the ``--json`` summary, over pipes (``local``) and both
SSH clients behind the real sshd."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

SITES = ["local", "site", "site-openssh"]
SIZE = 16 << 20  # above the size from which progress is shown


def mint_bridge(config: Path, cwd: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bridge.cli", "run", "--config", str(config), *args]


def run(config: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mint_bridge(config, cwd, *args), cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MINT_BRIDGE_LOG_DIR": str(cwd / "jobs")},
    )  # fmt: skip


def big_input(cwd: Path) -> tuple[Path, str]:
    data = os.urandom(SIZE)
    path = cwd / "big.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("site", SITES)
def test_big_files_show_progress_lines_in_a_log(
    bridge_config: Path, tmp_path: Path, site: str
) -> None:
    big_input(tmp_path)
    done = run(bridge_config, tmp_path, "--site", site, "--command", "checksum", "-i", "big.bin")
    assert done.returncode == 0, done.stderr
    job = re.search(r"mint-bridge: job (\S+) at site", done.stderr)
    assert job, done.stderr
    prefix = f"mint-bridge: {job.group(1)}: "
    lines = [line.removeprefix(prefix) for line in done.stderr.splitlines()
             if line.startswith(prefix)]  # fmt: skip
    assert "sending big.bin (16.0 MiB)" in lines, done.stderr
    assert any(re.fullmatch(r"sent big\.bin: 16\.0 MiB in \d+\.\d s \(\d+ MB/s\)", line)
               for line in lines), done.stderr  # fmt: skip
    # The small result (a checksum file) is below the size worth a line.
    assert not any(line.startswith("receiving") for line in lines), done.stderr

    done = run(bridge_config, tmp_path, "--site", site, "--command", "big", "-p", f"size={SIZE}",
               "-o", "out")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "receiving big.out (16.0 MiB)" in done.stderr
    assert re.search(r"received big\.out: 16\.0 MiB in \d+\.\d s", done.stderr), done.stderr
    assert (tmp_path / "out" / "big.out").stat().st_size == SIZE


@pytest.mark.parametrize("site", SITES)
def test_a_terminal_gets_a_bar_per_big_file(
    bridge_config: Path, tmp_path: Path, site: str
) -> None:
    big_input(tmp_path)
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        mint_bridge(bridge_config, tmp_path, "--site", site, "--command", "checksum",
                    "-i", "big.bin"),
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary,
        env={**os.environ, "MINT_BRIDGE_LOG_DIR": str(tmp_path / "jobs")},
    )  # fmt: skip
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert proc.wait(timeout=120) == 0, shown
    os.close(primary)
    text = shown.decode(errors="replace")
    assert "→ big.bin" in text and "100%" in text, text
    assert "16.0M/16.0M" in text, text
    assert "sending big.bin" not in text  # lines are for logs, not terminals


@pytest.mark.parametrize("site", SITES)
def test_json_summary_lists_inputs_and_results_with_their_sha256(
    bridge_config: Path, tmp_path: Path, site: str
) -> None:
    _, input_sha = big_input(tmp_path)
    done = run(bridge_config, tmp_path, "--site", site, "--command", "checksum", "-i", "big.bin",
               "-o", "out", "--json", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == "a line on stderr\n"  # --quiet: the solver's own stderr, nothing else
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["exit_code"] == 0 and summary["state"] == "completed"
    assert summary["site"] == site and summary["command"] == "checksum"
    assert summary["inputs"] == [{"name": "big.bin", "size": SIZE, "sha256": input_sha}]
    results = {entry["name"]: entry for entry in summary["results"]}
    assert results, summary
    for name, entry in results.items():
        path = tmp_path / "out" / name
        assert entry["size"] == path.stat().st_size and entry["sha256"] == sha256(path)
    assert summary["seconds"]["total"] >= summary["seconds"]["inputs"] > 0


@pytest.mark.parametrize("site", ["local", "site-openssh"])
def test_json_summary_carries_the_solvers_exit_code_and_a_refusal(
    bridge_config: Path, tmp_path: Path, site: str
) -> None:
    done = run(bridge_config, tmp_path, "--site", site, "--command", "fail", "-p", "code=3",
               "--json")  # fmt: skip
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "about to fail"  # the solver's stdout comes first
    summary = json.loads(lines[-1])
    assert summary["exit_code"] == 3 and summary["results"] == [], summary

    done = run(bridge_config, tmp_path, "--site", site, "--command", "no-such-command", "--json")
    assert done.returncode != 0
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["exit_code"] == done.returncode and summary["state"] == "error"
    assert "no-such-command" in summary["reason"] and summary["error"], summary
