"""What ``setup site`` is asked for (``SiteOptions``) and where each of its files goes.

``site_paths`` is pure: it resolves every path a site setup creates or edits from the options
(expanding ``~`` for the account that runs setup), so the plan, the notes and the tests all
see the same paths before anything is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bridge.core import defaults
from node_setup import cleanup_timer, systemd


@dataclass
class SiteOptions:
    site_id: str
    method: str = "ssh"
    scheduler: str | None = None
    mint_ip: str | None = None
    mint_key: str | None = None  # path of MInt's .pub file
    ssh_port: int = 22  # the port MInt's bridge reaches this host's sshd on
    broker_url: str | None = None
    allow_http: bool = False
    ca_bundle: str | None = None
    token: str | None = None  # read from stdin or a file by the caller, never from argv
    work_base: str = defaults.WORK_BASE
    config_dir: str = "~/.config/mint-bridge"
    site_dir: str = "~/mint-site"
    state_dir: str = "~/.local/state/mint-bridge"
    authorized_keys: str = "~/.ssh/authorized_keys"
    unit_dir: str | None = None  # default: /etc/systemd/system as root, else the config dir
    mint_bridge: str | None = None
    agent_user: str | None = None
    login_host: str | None = None  # the cluster's login node: the scheduler runs there
    login_user: str | None = None
    login_port: int | None = None
    login_identity_file: str | None = None
    login_fingerprint: str | None = None  # confirms the login node's host key before pinning
    force: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class SitePaths:
    config_dir: str
    site_config: str
    site_dir: str
    programs: str
    example_program: str
    private: str
    state_dir: str
    log_file: str
    work_base: str
    ssh_dir: str
    authorized_keys: str
    token_file: str
    unit_dir: str
    unit_file: str
    cleanup_service: str
    cleanup_timer: str


def site_paths(options: SiteOptions) -> SitePaths:
    def full(path: str) -> str:
        return os.path.abspath(os.path.expanduser(path))

    config_dir, site_dir, state_dir = (
        full(p) for p in (options.config_dir, options.site_dir, options.state_dir)
    )
    unit_dir = (
        full(options.unit_dir)
        if options.unit_dir
        else ("/etc/systemd/system" if os.geteuid() == 0 else config_dir)
    )
    programs = os.path.join(site_dir, "programs")
    authorized = full(options.authorized_keys)
    return SitePaths(
        config_dir=config_dir,
        site_config=os.path.join(config_dir, "site.toml"),
        site_dir=site_dir,
        programs=programs,
        example_program=os.path.join(programs, "example.sh"),
        private=os.path.join(site_dir, "private"),
        state_dir=state_dir,
        log_file=os.path.join(state_dir, "site.log"),
        work_base=full(options.work_base),
        ssh_dir=os.path.dirname(authorized),
        authorized_keys=authorized,
        token_file=os.path.join(config_dir, "agent.token"),
        unit_dir=unit_dir,
        unit_file=os.path.join(unit_dir, systemd.UNIT_NAME),
        cleanup_service=os.path.join(unit_dir, cleanup_timer.SERVICE_NAME),
        cleanup_timer=os.path.join(unit_dir, cleanup_timer.TIMER_NAME),
    )
