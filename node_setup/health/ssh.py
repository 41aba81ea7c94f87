"""Checks of a site reached over SSH, from the bridge node, one step after the other.

    ssh.dns        the host name resolves (the first jump host's, with ProxyJump)
    ssh.tcp        a TCP connection opens; value: connect time in ms
    ssh.host_key   the server's key matches the pin in known_hosts (RejectPolicy)
    ssh.auth       the site accepts our key
    ssh.hello      the forced command answers ``hello`` with its version and commands
    ssh.rtt        SSH round-trip time on the open connection (keepalive request), in ms

Steps that cannot run because an earlier one failed are reported ``unknown``. The connection
is made with the bridge's own code (``bridge.client.transports.paramiko_ssh``), so
``~/.ssh/config``, jump hosts and host key pinning behave exactly as for ``mint-bridge run``.
A site with ``client = "openssh"`` gets these checks too, then those of ``openssh``.
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import replace

from bridge import __version__
from bridge.client.node_config import LocalSite, SshSite
from bridge.client.transports.base import LocalConnector
from bridge.client.transports.paramiko_ssh import (
    Endpoint,
    SshConnection,
    SshConnector,
    fingerprint,
    pin_command,
    resolve,
)
from bridge.core.errors import (
    AccountUnusable,
    AuthenticationFailed,
    BridgeError,
    HostKeyRejected,
    ShellNotQuiet,
    SshSetupInvalid,
    TransportError,
)
from bridge.core.protocol import PROTOCOL_VERSION
from node_setup.health.ping import Hello, HelloFailed, hello
from node_setup.health.result import Probe
from node_setup.health.runner import Deadline
from node_setup.host_keys import FINGERPRINT

RTT_WARN_MS = 1000.0  # slower than this, log streaming and small transfers feel sluggish
LATER = ("ssh.host_key", "ssh.auth", "ssh.hello", "ssh.rtt", "ssh.job_cost")


def check_ssh_site(site: SshSite, probe: Probe, timeout: float) -> str:
    """Run the checks; return why no SSH session was made, or "" when our key was accepted."""
    deadline = Deadline(timeout)
    probe.start("ssh.config")
    try:
        endpoint = resolve(site)
    except BridgeError as exc:
        probe.fail("ssh.config", site.ssh_config, "", str(exc), "fix the SSH config file")
        return "the SSH config is invalid"
    if not _reachable(site, endpoint, probe, deadline):
        return _skip(probe, LATER, "the site is not reachable")
    started = time.monotonic()
    connection = _connect(site, endpoint, probe, deadline)
    if isinstance(connection, str):
        return connection
    try:
        _hello(site, connection, probe, deadline)
        cost = (time.monotonic() - started) * 1000
        _rtt(connection, probe)
    finally:
        connection.close()
    _job_cost(probe, cost)
    return ""


def _job_cost(probe: Probe, cost_ms: float) -> None:
    """What every job pays before its first byte, measured once: a new connection (TCP, key
    exchange, authentication), then the forced command through the login shell up to the
    site entry's hello. A round trip inside an open channel (``ssh.rtt``) hides all that."""
    probe.start("ssh.job_cost")
    probe.ok(
        "ssh.job_cost",
        round(cost_ms, 1),
        "ms",
        "per job: connect, authenticate, start the site entry and get its hello",
    )


def _skip(probe: Probe, names: tuple[str, ...], why: str) -> str:
    for name in names:
        probe.unknown(name, f"not checked: {why}")
    return why


# --- DNS and TCP ------------------------------------------------------------------------------


def _first_hop(site: SshSite, endpoint: Endpoint) -> tuple[str, int, str]:
    """Where our TCP connection goes: the site itself, or the first ProxyJump host."""
    if not endpoint.proxy_jump:
        return endpoint.hostname, endpoint.port, ""
    spec = endpoint.proxy_jump.split(",")[0].strip()
    hostport = spec.rpartition("@")[2]
    host, sep, port = hostport.partition(":")
    hop = resolve(site, host)
    return hop.hostname, int(port) if sep else hop.port, f" (jump host {host})"


def _reachable(site: SshSite, endpoint: Endpoint, probe: Probe, deadline: Deadline) -> bool:
    if endpoint.proxy_command:
        # The proxy makes the TCP connection; a failure shows up in the handshake below.
        return True
    host, port, via = _first_hop(site, endpoint)
    probe.start("ssh.dns", f"name lookup of {host} hangs: check /etc/resolv.conf")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        probe.fail(
            "ssh.dns",
            host,
            "",
            f"{host}{via} does not resolve: {exc}",
            "check the host name in the bridge config or ~/.ssh/config, or add it to DNS",
        )
        return False
    addresses = sorted({str(info[4][0]) for info in infos})
    probe.ok("ssh.dns", ", ".join(addresses), "", f"{host}{via} resolves")
    return _tcp(host, port, via, probe, deadline)


def _tcp(host: str, port: int, via: str, probe: Probe, deadline: Deadline) -> bool:
    probe.start("ssh.tcp", f"TCP connect to {host}:{port} hangs: a firewall drops packets")
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=deadline.left()):
            elapsed = (time.monotonic() - started) * 1000
    except OSError as exc:
        refused = isinstance(exc, ConnectionRefusedError)
        fix = (
            f"nothing listens on {host}:{port}: ask the site admin whether sshd is running "
            "and on which port"
            if refused
            else f"check the network and firewalls between this node and {host}:{port}"
        )
        probe.fail("ssh.tcp", f"{host}:{port}", "", f"cannot connect{via}: {exc}", fix)
        return False
    probe.ok("ssh.tcp", round(elapsed, 1), "ms", f"connected to {host}:{port}{via}")
    return True


# --- SSH handshake, host key, authentication ---------------------------------------------------


def host_key_fix(site: SshSite, endpoint: Endpoint, exc: BridgeError | None = None) -> str:
    """The command that re-pins the key ``exc`` is about (the site's, or its jump host's);
    it changes nothing else in the site's entry."""
    said = str(exc) if exc is not None else ""
    start = said.find("`mint-bridge setup pin-host-key ")
    command = said[start + 1 : said.find("`", start + 1)] if start >= 0 else ""
    return (
        "confirm the fingerprint with the site admin by another channel, then: "
        f"{command or pin_command(site, endpoint)}"
    )


def add_site_fix(site: SshSite, endpoint: Endpoint) -> str:
    """The ``add-site`` command that writes the site's entry, SSH config and pins anew, keeping
    its user, jump and client: for a jump host's Host block that OpenSSH cannot use."""
    extra = ""
    if endpoint.proxy_jump and not endpoint.proxy_command:
        host, port, _ = _first_hop(site, endpoint)
        extra += f" --jump {host}:{port} --jump-fingerprint SHA256:..."
    if site.client == "openssh":
        extra += " --client openssh"
    user = f" --user {endpoint.user}" if endpoint.user else ""
    return (
        "confirm the fingerprints with the site admin by another channel, then: "
        f"mint-bridge setup add-site {site.name} --force --ssh {endpoint.hostname}:"
        f"{endpoint.port}{user} --fingerprint SHA256:...{extra}"
    )


def auth_fix(endpoint: Endpoint) -> str:
    keys = ", ".join(endpoint.identity_files) or "default keys"
    user = endpoint.user or "the account"
    return (
        f"ask the site admin to check sshd's log: for a refused key, to rerun `mint-bridge "
        f"setup site` with this node's public key ({keys}.pub) and IP; for a locked or "
        f"expired account, to unlock it (`usermod -U -e '' {user}`)"
    )


def own_fix(exc: BaseException | None) -> str | None:
    """The fix a bridge-side or site-account error names itself (after its first "; "), for
    errors no other step of the check would blame correctly; None for any other error."""
    if isinstance(exc, SshSetupInvalid | ShellNotQuiet | AccountUnusable):
        return str(exc).partition("; ")[2] or str(exc)
    return None


def _connect(
    site: SshSite, endpoint: Endpoint, probe: Probe, deadline: Deadline
) -> SshConnection | str:
    """The authenticated connection, or why there is none (later checks are then unknown)."""
    probe.start(
        "ssh.host_key",
        "the server accepted TCP but sent no SSH banner: is it sshd, and is it overloaded?",
    )
    bounded = replace(site, connect_timeout=min(site.connect_timeout, deadline.left()))
    try:
        connection = SshConnector(bounded).connect()
    except SshSetupInvalid as exc:
        # This node's own key, SSH config or known_hosts: nothing of the site is to blame.
        name = "ssh.auth" if exc.field == "identity_file" else "ssh.host_key"
        if name == "ssh.auth":
            probe.unknown("ssh.host_key", "not checked: this node's SSH key cannot be used")
        probe.fail(name, exc.field, "", str(exc).split("; ")[0], own_fix(exc) or "")
        return _skip(probe, LATER[LATER.index(name) + 1 :], "this node's SSH setup is invalid")
    except HostKeyRejected as exc:
        probe.fail(
            "ssh.host_key",
            _offered_fingerprint(exc),
            "",
            str(exc).split(";")[0],
            host_key_fix(site, endpoint, exc),
        )
        return _skip(probe, LATER[1:], "the host key is not trusted")
    except AuthenticationFailed as exc:
        probe.ok("ssh.host_key", None, "", "matches the pin")
        keys = ", ".join(endpoint.identity_files) or "default keys"
        probe.fail("ssh.auth", keys, "", str(exc).split(";")[0], auth_fix(endpoint))
        return _skip(probe, LATER[2:], "our key was refused")
    except TransportError as exc:
        silent = "banner" in str(exc)
        probe.fail(
            "ssh.host_key",
            None,
            "",
            str(exc),
            "the server accepted TCP but sent no SSH banner: is it sshd, and is it overloaded?"
            if silent
            else "the server does not complete an SSH handshake: ask the site admin to check sshd",
        )
        return _skip(probe, LATER[1:], "no SSH session")
    assert isinstance(connection, SshConnection)
    transport = connection.clients[-1].get_transport()
    key = transport.get_remote_server_key() if transport is not None else None
    probe.ok("ssh.host_key", fingerprint(key) if key else None, "", "matches the pin")
    probe.ok("ssh.auth", ", ".join(endpoint.identity_files) or "default keys", "", "key accepted")
    return connection


def _offered_fingerprint(exc: HostKeyRejected) -> str | None:
    """The server's fingerprint in the message, if it names one: a real one only, never the
    ``SHA256:...`` placeholder of the fix (which once showed as "SHA256:...`")."""
    found = FINGERPRINT.search(str(exc))
    return found.group(0) if found else None


# --- the forced command and the round trip -----------------------------------------------------


def _hello(site: SshSite, connection: SshConnection, probe: Probe, deadline: Deadline) -> None:
    probe.start("ssh.hello", "the site entry started but never answered: see the site log")
    try:
        reply = hello(connection, deadline.left())
    except HelloFailed as exc:
        fix = own_fix(exc.__cause__)
        if fix is not None:  # the account's shell printed, or cannot run commands
            probe.fail("ssh.hello", None, "", str(exc.__cause__).split("; ")[0], fix)
            return
        probe.fail("ssh.hello", exc.exit_status, "exit status", _hello_message(exc), hello_fix(exc))
        return
    except BridgeError as exc:
        probe.fail(
            "ssh.hello",
            None,
            "",
            f"the site answered with an error: {exc}",
            "ask the site admin to run `mint-bridge health --site-side` at the site",
        )
        return
    report_hello(probe, "ssh.hello", reply)


def report_hello(probe: Probe, name: str, reply: Hello) -> None:
    value = f"mint-bridge {reply.version}, commands ({len(reply.commands)}): " + (
        ", ".join(reply.commands) or "none"
    )
    if reply.protocol != PROTOCOL_VERSION:
        probe.fail(
            name,
            value,
            "",
            f"the site speaks protocol {reply.protocol}, we speak {PROTOCOL_VERSION}",
            "install the same mint-bridge version on both ends",
        )
    elif not reply.commands:
        probe.warn(
            name,
            value,
            "",
            "the site offers no commands",
            "ask the site admin to add commands to the site config",
        )
    elif reply.version != __version__:
        probe.warn(
            name,
            value,
            "",
            f"the site runs mint-bridge {reply.version}, this node {__version__}",
            "install the same mint-bridge version on both ends",
        )
    else:
        probe.ok(name, value, "", f"site {reply.site} answered in {reply.seconds * 1000:.0f} ms")


def _hello_message(exc: HelloFailed) -> str:
    said = exc.stderr.splitlines()[-1] if exc.stderr else "nothing"
    return f"the forced command gave no answer (exit status {exc.exit_status}); it said: {said}"


def hello_fix(exc: HelloFailed) -> str:
    if exc.exit_status == 78 or "configuration error" in exc.stderr:
        return (
            "the site config is invalid: ask the site admin to run `mint-bridge health "
            "--site-side` there"
        )
    if exc.exit_status == 127 or "not found" in exc.stderr:
        return (
            "the key's authorized_keys line does not run mint-bridge: ask the site admin to "
            "rerun `mint-bridge setup site` (the installed path may have moved)"
        )
    if exc.exit_status == 77:
        return "the site refused our request: install the same mint-bridge version on both ends"
    return "ask the site admin to check the site log (~/.local/state/mint-bridge/site.log)"


def _rtt(connection: SshConnection, probe: Probe) -> None:
    """Median of three keepalive requests: the server answers each at once (with a failure
    reply, as OpenSSH does for requests it does not know), so this is pure network time."""
    probe.start("ssh.rtt")
    transport = connection.clients[-1].get_transport()
    if transport is None or not transport.is_active():
        probe.unknown("ssh.rtt", "the connection closed before the round-trip test")
        return
    samples = []
    for _ in range(3):
        started = time.monotonic()
        transport.global_request("keepalive@openssh.com", wait=True)
        samples.append((time.monotonic() - started) * 1000)
    rtt = round(statistics.median(samples), 2)
    if rtt > RTT_WARN_MS:
        probe.warn(
            "ssh.rtt",
            rtt,
            "ms",
            f"round trips take {rtt:.0f} ms",
            "a slow or congested link: log streaming and small files will be slow",
        )
    else:
        probe.ok("ssh.rtt", rtt, "ms", "median of 3 SSH round trips")


# --- a site that is this machine ---------------------------------------------------------------


def check_local_site(site: LocalSite, probe: Probe, timeout: float) -> None:
    probe.start("local.hello")
    try:
        connection = LocalConnector(site).connect()
        try:
            reply = hello(connection, timeout)
        finally:
            connection.close()
    except BridgeError as exc:
        probe.fail(
            "local.hello",
            site.site_config,
            "",
            str(exc),
            f"run `mint-bridge health --site-side --config {site.site_config}`",
        )
        return
    report_hello(probe, "local.hello", reply)
