"""The systemd unit that keeps a site's ``mint-bridge agent`` running (broker method).

The unit sandboxes the agent as far as running arbitrary site programs allows: no new
privileges, the whole file system read-only (``ProtectSystem=strict``) except the work base
and the agent's state dir, kernel tunables, modules and cgroups protected. ``PrivateTmp`` is
off on purpose: work dirs live in ``/tmp/<job-uuid>`` as in the original convention, and the
site's scripts, its scheduler and the admin must see them where they are.

ExecStart is quoted with systemd's own rules (not a shell's): double quotes with backslash
escapes, ``%`` doubled (specifiers) and ``$`` doubled (variable expansion). The token never
appears in the unit: the agent reads it from its 0600 file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from node_setup.errors import SetupError

UNIT_NAME = "mint-bridge-agent.service"
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def quote_arg(arg: str) -> str:
    """One ExecStart argument, quoted so systemd passes it through unchanged."""
    if any(ch in arg for ch in "\n\r\0"):
        raise SetupError(f"argument {arg!r} holds a line break; a unit file is line-based")
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(arg) and arg:
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def quote_path_list(paths: list[str]) -> str:
    """Paths for ReadWritePaths=: space-separated; a path with a space is quoted."""
    return " ".join(quote_arg(path) for path in paths)


@dataclass(frozen=True)
class AgentUnit:
    site_id: str
    exec_argv: list[str]
    user: str
    writable: list[str]  # the work base and the agent's state dir

    def render(self) -> str:
        exec_start = " ".join(quote_arg(arg) for arg in self.exec_argv)
        return f"""\
# mint-bridge agent for site {self.site_id}: fetches jobs from the broker and runs them here.
# Written by `mint-bridge setup site`; enable it with
#   systemctl daemon-reload && systemctl enable --now {UNIT_NAME}
[Unit]
Description=mint-bridge agent for site {self.site_id}
Documentation=man:systemd.exec(5)
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=simple
User={self.user}
ExecStart={exec_start}
# Re-reads the site config; running jobs go on with the config they started with.
ExecReload=/bin/kill -HUP $MAINPID
# Transient failures (broker down, network cut) are retried by the agent itself; a crash
# restarts it, and a broken config does not spin (StartLimit* in [Unit]).
Restart=on-failure
RestartSec=10
UMask=0077

# --- sandboxing: as tight as running the site's own programs allows -------------------------
NoNewPrivileges=yes
ProtectSystem=strict
# Work dirs live in /tmp/<job-uuid> (the original convention): site scripts, the scheduler and
# the admin must see them there, so /tmp is the real one.
PrivateTmp=false
# Everything else is read-only; add the paths your programs write to (scratch dirs).
ReadWritePaths={quote_path_list(self.writable)}
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Verification:
    ok: bool
    problems: list[str]


def verify_texts(units: dict[str, str], timeout: float = 30.0) -> Verification | None:
    """Verify units before they are written: copies (name -> content) in one temporary dir,
    so a timer is checked together with the service it starts."""
    with tempfile.TemporaryDirectory(prefix="mint-bridge-unit-") as tmp:
        paths = []
        for name, text in units.items():
            paths.append(os.path.join(tmp, name))
            with open(paths[-1], "w", encoding="utf-8") as handle:
                handle.write(text)
        return verify(*paths, timeout=timeout)


def verify(*unit_paths: str, timeout: float = 30.0) -> Verification | None:
    """``systemd-analyze verify`` on the unit; None where the tool is not installed.

    The tool exits 0 even for unknown keys and bad values (it only warns), so any message it
    prints about the unit counts as a problem.
    """
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    try:
        proc = subprocess.run(
            [tool, "verify", *unit_paths],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Verification(False, [f"systemd-analyze verify could not run: {exc}"])
    problems = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    return Verification(proc.returncode == 0 and not problems, problems)
