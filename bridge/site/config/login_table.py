"""The login-node keys of a site's ``[scheduler]`` table (``schedulers.login_host``).

    [scheduler]
    login_host = "mint@login.cluster.example"     # user@host, or a Host alias of ~/.ssh/config
    login_port = 22                               # optional
    login_identity_file = "~/.ssh/id_login"       # optional; else the keys ~/.ssh/config names
    login_known_hosts = "~/.ssh/known_hosts_login"  # required: the login node's pinned key
    login_ssh_config = "~/.ssh/config"            # optional; default: as ssh reads it
    login_control_dir = "~/.local/state/mint-bridge/login"   # the control socket's private dir
    login_persist = "10m"                         # ControlPersist of the shared connection
    shared_workdir = true                         # work_base is at the same path there
    remote_root = "/scratch/mint/jobs"            # shared_workdir = false: per-job dirs there

Checked when the config is loaded: a value that cannot work is named with its fix, so the site
never starts a job it would then fail to reach the login node for.
"""

from __future__ import annotations

import os
import re

from bridge.core.tomlconf import Section
from bridge.core.units import parse_duration
from schedulers.login_host import LoginHost

KEYS = {
    "login_host", "login_port", "login_identity_file", "login_known_hosts", "login_ssh_config",
    "login_control_dir", "login_persist", "shared_workdir", "remote_root",
}  # fmt: skip

# user@host or a bare host/alias: no option-looking or shell-meaningful characters.
TARGET = re.compile(r"(?:[A-Za-z0-9._][A-Za-z0-9._-]{0,63}@)?[A-Za-z0-9_][A-Za-z0-9._-]{0,252}")


def load_login_host(sec: Section) -> LoginHost | None:
    """The login host of ``[scheduler]``, or None when its commands run on this machine."""
    if "login_host" not in sec.data:
        others = sorted(k for k in KEYS if k in sec.data)
        if others:
            raise sec.error(
                f'{others[0]} needs login_host, e.g. login_host = "mint@login.example.org"',
                others[0],
            )
        return None
    target = sec.get("login_host", str, "")
    if not TARGET.fullmatch(target):
        raise sec.error(
            f"{target!r:.80} is not user@host or a host name, e.g. "
            'login_host = "mint@login.example.org"',
            "login_host",
        )
    if "login_known_hosts" not in sec.data:
        raise sec.error(
            "is required with login_host: the login node's pinned host key, e.g. "
            f'login_known_hosts = "~/.ssh/known_hosts" (fill it with `ssh-keyscan '
            f"{target.rsplit('@', 1)[-1]}` after checking the fingerprint)",
            "login_known_hosts",
        )
    return LoginHost(
        target=target,
        known_hosts=_existing_file(sec, "login_known_hosts"),
        port=_port(sec),
        identity_file=_existing_file(sec, "login_identity_file") or None,
        ssh_config=_existing_file(sec, "login_ssh_config") or None,
        control_dir=sec.file_value("login_control_dir", LoginHost.control_dir),
        persist=max(1, round(sec.convert("login_persist", parse_duration, 600.0))),
        shared_workdir=sec.get("shared_workdir", bool, True),
        remote_root=_remote_root(sec),
    )


def _port(sec: Section) -> int | None:
    if "login_port" not in sec.data:
        return None
    port = sec.get("login_port", int, 22)
    if not 1 <= port <= 65535:
        raise sec.error(f"{port} is not a TCP port (1-65535), e.g. login_port = 22", "login_port")
    return port


def _existing_file(sec: Section, key: str) -> str:
    path = sec.file_value(key, "")
    if key in sec.data and not os.path.isfile(path):
        raise sec.error(f"{path} is not a file; create it or correct the path", key)
    return path


def _remote_root(sec: Section) -> str | None:
    shared = sec.get("shared_workdir", bool, True)
    root = sec.get("remote_root", str, "") or None
    if shared:
        if root is not None:
            raise sec.error(
                "is only used with shared_workdir = false; remove it, or set "
                "shared_workdir = false",
                "remote_root",
            )
        return None
    if root is None:
        raise sec.error(
            "is required with shared_workdir = false: the login node's directory under which "
            'each job gets its own, e.g. remote_root = "/scratch/mint/jobs"',
            "remote_root",
        )
    if not root.startswith("/") or "\\" in root or "\n" in root or root.rstrip("/") == "":
        raise sec.error(
            f"{root!r:.80} must be an absolute path on the login node (not /), e.g. "
            '"/scratch/mint/jobs"',
            "remote_root",
        )
    return root.rstrip("/")
