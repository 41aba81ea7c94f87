"""The systemd unit of the broker (``mint-bridge broker serve``), written by
``mint-bridge setup broker-unit``.

``KillMode=control-group`` (systemd's default, stated so nobody "fixes" it to ``process``):
a stop or restart kills gunicorn's worker with its master. An orphaned worker once kept the
port, and the restarted broker could not bind it. ``ExecReload`` sends SIGHUP, which the
broker answers by reading its config again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bridge.core.errors import BridgeError
from bridge.core.tomlconf import load_toml
from node_setup import changes
from node_setup.errors import SetupError
from node_setup.systemd import quote_arg, quote_path_list

UNIT_NAME = "mint-bridge-broker.service"


@dataclass(frozen=True)
class BrokerUnit:
    exec_argv: list[str]  # mint-bridge broker serve --config <broker.toml>
    user: str
    writable: list[str]  # the store's directory (SQLite) and the log dir

    def render(self) -> str:
        exec_start = " ".join(quote_arg(arg) for arg in self.exec_argv)
        return f"""\
# mint-bridge broker. Written by `mint-bridge setup broker-unit`; enable it with
#   systemctl daemon-reload && systemctl enable --now {UNIT_NAME}
[Unit]
Description=mint-bridge broker (HTTPS pull path)
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=simple
User={self.user}
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
# Stop and restart take every process of the unit, gunicorn's workers included: a worker
# left behind would hold the port and the restarted broker could not bind it.
KillMode=control-group
KillSignal=SIGTERM
TimeoutStopSec=30
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
PrivateTmp=true
ReadWritePaths={quote_path_list(self.writable)}
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


def plan_broker_unit(
    config: str, user: str, unit_dir: str, mint_bridge: str
) -> tuple[changes.Plan, str]:
    """The plan that writes the broker's unit, and the unit file's path."""
    config = os.path.abspath(os.path.expanduser(config))
    if not os.path.isabs(mint_bridge):
        raise SetupError(f"--mint-bridge {mint_bridge!r} must be an absolute path")
    argv = [mint_bridge, "broker", "serve", "--config", config]
    unit = BrokerUnit(argv, user, [data_dir(config)])
    path = os.path.join(unit_dir, UNIT_NAME)
    plan = changes.Plan()
    plan.mkdir(unit_dir, 0o755, tighten=False)
    plan.write(path, unit.render(), 0o644)
    return plan, path


def data_dir(config: str) -> str:
    """``[storage] data_dir`` of broker.toml (relative: from the config's directory)."""
    try:
        storage = load_toml(config).get("storage", {})
    except BridgeError as exc:
        raise SetupError(f"--config {config}: {exc}") from exc
    value = storage.get("data_dir") if isinstance(storage, dict) else None
    if not isinstance(value, str) or not value:
        raise SetupError(
            f"{config}: storage.data_dir is required (the broker's store and files); set it, "
            "then rerun"
        )
    return os.path.join(os.path.dirname(config), os.path.expanduser(value))
