"""Checks of a site whose jobs use the system's OpenSSH client (``client = "openssh"``).

    ssh.openssh.binary       ``ssh`` is on PATH, is OpenSSH and new enough; value: ``ssh -V``
    ssh.openssh.control_dir  the control socket directory is ours and private (or can be made)
    ssh.openssh.hello        ``hello`` through ``transports.openssh``, as a job connects

They run after the checks of ``ssh``, which probe the same host and pinned key with paramiko:
when those got no SSH session, ``ssh.openssh.hello`` is ``unknown`` rather than a second
failure with the same fix. The check never leaves a connection behind: ``hello`` rides a shared
connection that is already open, and otherwise its own ``ssh`` ends with it (no
ControlPersist). It changes nothing but what the first job would: a missing ``control_dir`` is
created 0700, and one that others could read is made 0700.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
from dataclasses import replace

from bridge.client.node_config import SshSite
from bridge.client.transports.openssh import OpenSshConnector
from bridge.client.transports.paramiko_ssh import Endpoint, resolve
from bridge.core.errors import (
    AuthenticationFailed,
    BridgeError,
    ConfigError,
    HostKeyRejected,
    SiteUnreachable,
)
from node_setup.health.ping import HelloFailed, hello
from node_setup.health.result import Probe
from node_setup.health.runner import Deadline
from node_setup.health.ssh import (
    add_site_fix,
    auth_fix,
    check_ssh_site,
    hello_fix,
    host_key_fix,
    own_fix,
    report_hello,
)

# IdentityAgent (on every argv of the client) and ProxyJump (setup's jump hosts) came in 7.3;
# an older ssh stops at "Bad configuration option".
MIN_OPENSSH = (7, 3)
_VERSION = re.compile(r"OpenSSH_(\d+)\.(\d+)")


def check_openssh_site(site: SshSite, probe: Probe, timeout: float) -> None:
    deadline = Deadline(timeout)
    no_session = check_ssh_site(site, probe, timeout)
    ready = _binary(site, probe, deadline)
    ready = _control_dir(site, probe) and ready
    if no_session:
        probe.unknown(
            "ssh.openssh.hello", f"not checked: {no_session} (as above: same host, same pinned key)"
        )
    elif not ready:
        probe.unknown("ssh.openssh.hello", "not checked: the OpenSSH client cannot start")
    else:
        _hello(site, probe, deadline)


# --- the ssh binary ---------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` from ``ssh -V`` output, or None when it is not OpenSSH's."""
    found = _VERSION.match(text.strip())
    return (int(found.group(1)), int(found.group(2))) if found else None


def _install_fix(site: SshSite) -> str:
    return (
        "install OpenSSH's client (Debian/Ubuntu: openssh-client, RHEL: openssh-clients), "
        f'or set client = "paramiko" for site {site.name}'
    )


def _binary(site: SshSite, probe: Probe, deadline: Deadline) -> bool:
    name = "ssh.openssh.binary"
    probe.start(name, "`ssh -V` never returned: check the ssh command on PATH")
    path = shutil.which("ssh")
    if path is None:
        probe.fail(name, None, "", "no ssh command on PATH", _install_fix(site))
        return False
    try:
        done = subprocess.run(
            [path, "-V"], capture_output=True, text=True, timeout=deadline.left(), check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        probe.fail(name, path, "", f"cannot run {path} -V: {exc}", _install_fix(site))
        return False
    said = (done.stderr or done.stdout).strip()  # ssh -V prints on stderr
    version = said.splitlines()[0] if said else ""
    number = parse_version(version)
    if done.returncode != 0 or number is None:
        message = f"{path} is not OpenSSH's client: `ssh -V` said {version or 'nothing'!r:.100}"
        probe.fail(name, version or None, "", message, _install_fix(site))
        return False
    if number < MIN_OPENSSH:
        probe.fail(
            name,
            version,
            "",
            f"OpenSSH {number[0]}.{number[1]} lacks options the client passes (IdentityAgent)",
            f"install OpenSSH {MIN_OPENSSH[0]}.{MIN_OPENSSH[1]} or newer, "
            f'or set client = "paramiko" for site {site.name}',
        )
        return False
    probe.ok(name, version, "", path)
    return True


# --- the control socket directory -------------------------------------------------------------


def _own_dir(site: SshSite) -> str:
    return f"point control_dir of site {site.name} at a directory of your own"


def _control_dir_fix(site: SshSite) -> str:
    return f"remove {site.control_dir} (the next connection makes it anew), or {_own_dir(site)}"


def _control_dir(site: SshSite, probe: Probe) -> bool:
    """Anyone who can open a control socket can run sessions on our authenticated connection,
    so the directory must be ours and closed to others (``private_control_dir`` refuses it
    otherwise)."""
    name, path = "ssh.openssh.control_dir", site.control_dir
    probe.start(name)
    if not site.share_connection:
        probe.ok(name, None, "", "not used: share_connection = false")
        return True
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _creatable(site, probe)
    except OSError as exc:
        probe.fail(name, path, "", f"cannot read {path}: {exc.strerror}", _control_dir_fix(site))
        return False
    if not stat.S_ISDIR(info.st_mode):
        probe.fail(name, path, "", f"{path} is not a directory", _control_dir_fix(site))
        return False
    if info.st_uid != os.getuid():
        message = (
            f"{path} belongs to {_user(info.st_uid)}, not to {_user(os.getuid())}: "
            "its owner could reach our connections"
        )
        probe.fail(name, path, "", message, _control_dir_fix(site))
        return False
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        probe.warn(
            name,
            path,
            "",
            f"{path} is mode {mode:04o}: other users may reach its sockets (the next "
            "connection makes it 0700)",
            f"chmod 700 {path}",
        )
        return True
    probe.ok(name, path, "", f"0700, ours; control sockets: {_sockets(path)}")
    return True


def _creatable(site: SshSite, probe: Probe) -> bool:
    name, path = "ssh.openssh.control_dir", site.control_dir
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK):
        probe.ok(name, path, "", "does not exist yet: the first connection creates it 0700")
        return True
    probe.fail(
        name,
        path,
        "",
        f"{path} does not exist and cannot be created: {parent} is not a directory we may write",
        f"mkdir -p -m 700 {path}, or {_own_dir(site)}",
    )
    return False


def _sockets(path: str) -> int:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    return sum(1 for e in entries if stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode))


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# --- hello through the OpenSSH client --------------------------------------------------------


def _hello(site: SshSite, probe: Probe, deadline: Deadline) -> None:
    name = "ssh.openssh.hello"
    probe.start(name, "ssh started but the site entry never answered: see the site log")
    # connection_persist 0: no ControlPersist, so a connection the check opens ends with it.
    bounded = replace(
        site,
        connect_timeout=min(site.connect_timeout, deadline.left()),
        connection_persist=0,
    )
    try:
        connection = OpenSshConnector(bounded).connect()
        try:
            reply = hello(connection, deadline.left())
        finally:
            connection.close()
    except BridgeError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, BridgeError) else exc
        probe.fail(name, None, "", str(cause).split("; ")[0], hello_failure_fix(site, exc))
        return
    report_hello(probe, name, reply)


def hello_failure_fix(site: SshSite, exc: BridgeError) -> str:
    """The fix for a ``hello`` through ``ssh`` that failed with ``exc``.

    What ``ssh`` printed decided the class of the error (host key, key refused, SSH config,
    unreachable); ``hello`` wraps a transport error in ``HelloFailed``, whose cause it is.
    """
    cause = exc.__cause__ if isinstance(exc.__cause__, BridgeError) else exc
    fix = own_fix(cause)
    if fix is not None:  # this node's key, or the site account's shell: named by the error
        return fix
    if isinstance(cause, HostKeyRejected):
        endpoint = _endpoint(site)
        if endpoint.proxy_jump:
            # paramiko verified every pin just before: what OpenSSH lacks is the jump's
            # Host block (its own ssh gets none of our options), which add-site writes.
            return add_site_fix(site, endpoint)
        return host_key_fix(site, endpoint, cause)
    if isinstance(cause, AuthenticationFailed):
        return auth_fix(_endpoint(site))
    if isinstance(cause, ConfigError):
        if cause.field == "control_dir":
            return _control_dir_fix(site)
        if cause.field == "client":
            return _install_fix(site)
        return f"OpenSSH refuses the SSH config: see `ssh -G -F {site.ssh_config} {site.host}`"
    if isinstance(cause, SiteUnreachable):
        return f"see where ssh stops: `ssh -v -F {site.ssh_config} {site.host}`"
    # The site entry ran and ended without an answer, or answered with an error.
    return hello_fix(exc if isinstance(exc, HelloFailed) else HelloFailed(str(exc), str(exc)))


def _endpoint(site: SshSite) -> Endpoint:
    try:
        return resolve(site)
    except BridgeError:  # paramiko read this config a moment ago; only the fix text needs it
        return Endpoint(
            alias=site.host,
            hostname=site.host,
            port=site.port or 22,
            user=site.user or "",
            identity_files=(site.identity_file,) if site.identity_file else (),
            known_hosts=site.known_hosts,
            proxy_command=None,
            proxy_jump=None,
        )
