"""The systemd timer that runs ``mint-bridge site cleanup`` hourly, and its oneshot service.

Expired work dirs pile up in the work base unless something runs cleanup; a printed cron line
was easy to forget, so setup writes these two units next to the agent's. The service runs as
the site account with the agent's sandbox (only the work base and the state dir writable).
``Persistent=true`` catches up a run missed while the machine was off.
"""

from __future__ import annotations

from dataclasses import dataclass

from node_setup.systemd import quote_arg, quote_path_list

SERVICE_NAME = "mint-bridge-cleanup.service"
TIMER_NAME = "mint-bridge-cleanup.timer"


@dataclass(frozen=True)
class CleanupUnits:
    site_id: str
    exec_argv: list[str]  # mint-bridge site cleanup --config <site.toml>
    user: str
    writable: list[str]  # the work base and the state dir

    def service(self) -> str:
        exec_start = " ".join(quote_arg(arg) for arg in self.exec_argv)
        return f"""\
# mint-bridge cleanup for site {self.site_id}: removes work dirs whose retention has passed.
# Written by `mint-bridge setup site`; started by {TIMER_NAME}.
[Unit]
Description=mint-bridge cleanup of expired work dirs for site {self.site_id}

[Service]
Type=oneshot
User={self.user}
ExecStart={exec_start}
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
# Work dirs live in /tmp/<job-uuid>: the real /tmp, as for the agent.
PrivateTmp=false
ReadWritePaths={quote_path_list(self.writable)}
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
"""

    def timer(self) -> str:
        return f"""\
# Runs {SERVICE_NAME} hourly. Written by `mint-bridge setup site`; enable it with
#   systemctl daemon-reload && systemctl enable --now {TIMER_NAME}
[Unit]
Description=Hourly mint-bridge cleanup for site {self.site_id}

[Timer]
OnCalendar=hourly
# Sites sharing a file server do not all scan it at the same second.
RandomizedDelaySec=10min
# A run missed while the machine was off happens at the next boot.
Persistent=true

[Install]
WantedBy=timers.target
"""
