"""Mistakes a user can make on the bridge node, each against a real sshd and a real
``mint-bridge run``: the exit code, no retry (no "reconnecting" line, well under 2 s on
loopback) and a message that names the fix, which works as printed where it is a command."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.errors import ExitCode
from tests.integration.conftest import SiteEnv
from tests.support.sshd import Sshd, forced_command, keygen, start_sshd

# The server each bridge config points at: "no retry" is counted there as connections, not
# guessed from how long a run took.
_SERVERS: dict[Path, Sshd] = {}


def bridge_config(path: Path, sshd: Sshd, *, client: str = "paramiko", **keys: str) -> Path:
    values = {
        "host": "site",
        "ssh_config": str(sshd.ssh_config),
        "known_hosts": str(sshd.known_hosts),
        **keys,
    }
    lines = ["[sites.s]", f'client = "{client}"', "reconnect_attempts = 8"]
    lines += [f'{key} = "{value}"' for key, value in values.items()]
    if client == "openssh":
        lines.append("share_connection = false")  # each run its own ssh: nothing left behind
    path.write_text("\n".join(lines) + "\n")
    _SERVERS[path] = sshd
    return path


def _connections(config: Path) -> int:
    server = _SERVERS.get(config)
    return 0 if server is None else server.ssh_connections()


def run(
    config: Path, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    before = _connections(config)
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", "--config", str(config), "--site", "s",
         "--command", "checksum", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MINT_BRIDGE_LOG_DIR": str(cwd / "jobs"), **(env or {})},
    )  # fmt: skip
    return done, _connections(config) - before


def assert_fast_failure(done: subprocess.CompletedProcess[str], connections: int, code: int) -> str:
    """A permanent error: named at once, after at most the one connection that found it."""
    assert done.returncode == code, done.stderr
    assert "reconnecting" not in done.stderr
    assert connections <= 1, f"{connections} connections to the site: {done.stderr}"
    lines = done.stderr.splitlines()
    assert lines[0].startswith("mint-bridge: job ")  # the job id line comes first
    assert len(lines) == 2 and lines[1].startswith("mint-bridge: error: "), done.stderr
    return lines[1]


CLIENTS = ["paramiko", "openssh"]


# --- item: SSH keys, ssh_config, known_hosts of this node ----------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_missing_key_file_fails_at_once_with_the_command_that_makes_it(
    sshd: Sshd, tmp_path: Path, client: str
) -> None:
    key = tmp_path / "id_ed25519"
    config = bridge_config(tmp_path / "bridge.toml", sshd, client=client, identity_file=str(key))
    done, connections = run(config, tmp_path)
    message = assert_fast_failure(done, connections, ExitCode.CONFIG_INVALID)
    command = f"ssh-keygen -t ed25519 -f {key} -N ''"
    assert f"the SSH key {key} named by identity_file of [sites.s] in {config}" in message
    assert f"does not exist; create it with `{command}`" in message
    # The command works as printed; the new key is then what the site must be told about.
    subprocess.run(shlex.split(command), check=True, capture_output=True)
    done, connections = run(config, tmp_path)
    assert "does not exist" not in done.stderr
    if client == "paramiko":  # only the new key is offered, and the site does not know it yet
        assert done.returncode == ExitCode.AUTH_FAILED, done.stderr
        assert f"refused the key {key}" in done.stderr and connections <= 1
    else:  # ssh offers the SSH config's IdentityFile after it, which the site accepts
        assert done.returncode == 0, done.stderr


def test_a_missing_identity_file_of_the_ssh_config_is_named(sshd: Sshd, tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    missing = tmp_path / "gone_ed25519"
    ssh_config.write_text(
        sshd.ssh_config.read_text().replace(str(sshd.client_key), str(missing))
    )
    config = bridge_config(tmp_path / "bridge.toml", sshd, ssh_config=str(ssh_config))
    done, connections = run(config, tmp_path)
    message = assert_fast_failure(done, connections, ExitCode.CONFIG_INVALID)
    assert f"the SSH key {missing} named by IdentityFile of Host site in {ssh_config}" in message


def test_an_unparsable_ssh_config_is_a_local_error(sshd: Sshd, tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(sshd.ssh_config.read_text() + "  HostName\n")
    config = bridge_config(tmp_path / "bridge.toml", sshd, ssh_config=str(ssh_config))
    done, connections = run(config, tmp_path)
    message = assert_fast_failure(done, connections, ExitCode.CONFIG_INVALID)
    assert f"cannot read the SSH config {ssh_config}" in message
    assert "Unparsable line HostName" in message


def test_a_known_hosts_that_cannot_be_read_is_a_local_error(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.mkdir()  # root reads any file: a directory is what this user cannot read as a file
    config = bridge_config(tmp_path / "bridge.toml", sshd, known_hosts=str(known))
    done, connections = run(config, tmp_path)
    message = assert_fast_failure(done, connections, ExitCode.CONFIG_INVALID)
    assert f"cannot read known_hosts {known} (known_hosts of [sites.s] in {config})" in message


# --- item: a login shell that prints --------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_login_shell_that_prints_is_named(
    sshd: Sshd, site_env: SiteEnv, tmp_path: Path, client: str
) -> None:
    # What a .bashrc that echoes does: text on stdout before the site entry starts.
    key = tmp_path / "printing"
    keygen(key)
    command = f"echo Last login: Mon Nov 24 10:00:00 2025; {forced_command(site_env.site_config)}"
    sshd.authorize(f'command="{command}",restrict {key.with_suffix(".pub").read_text()}')
    config = bridge_config(tmp_path / "bridge.toml", sshd, client=client, identity_file=str(key))
    done, connections = run(config, tmp_path)
    message = assert_fast_failure(done, connections, ExitCode.PROTOCOL_ERROR)
    assert (
        "the site account's login shell printed 'Last login: Mon Nov 24 10:00:00 2025' before "
        "the protocol started; keep the account's shell quiet for non-interactive logins"
    ) in message
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "**Keep the account's shell quiet.**" in readme


# --- item: the host key, and the command that re-pins it ------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_the_printed_pin_command_works_for_a_changed_host_key(
    sshd: Sshd, tmp_path: Path, client: str
) -> None:
    impostor = tmp_path / "impostor"
    keygen(impostor, "impostor")
    kind, key = impostor.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"# the admin's note\n[127.0.0.1]:{sshd.port} {kind} {key}\n")
    config = bridge_config(
        tmp_path / "bridge.toml", sshd, client=client, user=pwd.getpwuid(os.getuid()).pw_name,
        known_hosts=str(known), identity_file=str(sshd.client_key),
    )  # fmt: skip
    before = config.read_text()
    done, connections = run(config, tmp_path)
    message = assert_fast_failure(done, connections, ExitCode.HOST_KEY_REJECTED)
    printed = re.search(r"`(mint-bridge setup pin-host-key [^`]*)`", message)
    assert printed is not None, message
    assert printed.group(1) == "mint-bridge setup pin-host-key s --fingerprint SHA256:..."
    # The admin confirms the real fingerprint; the command is run as printed with it filled in.
    real = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.host_key.with_suffix(".pub"))],
        capture_output=True, text=True, check=True,
    ).stdout.split()[1]  # fmt: skip
    argv = shlex.split(printed.group(1).replace("SHA256:...", real))
    mint_bridge = shutil.which("mint-bridge", path=os.path.dirname(sys.executable))
    assert mint_bridge is not None
    pinned = subprocess.run(
        [mint_bridge, *argv[1:]], capture_output=True, text=True, timeout=60,
        env={**os.environ, "MINT_BRIDGE_CONFIG": str(config)},
    )  # fmt: skip
    assert pinned.returncode == 0, pinned.stderr
    assert config.read_text() == before  # the site's entry, its user included, is untouched
    assert "# the admin's note" in known.read_text() and key not in known.read_text()
    (tmp_path / "in.dat").write_text("payload")
    done, _ = run(config, tmp_path, "-i", "in.dat")
    assert done.returncode == 0, done.stderr


# --- item: accounts at the site that cannot log in ----------------------------------------


@contextlib.contextmanager
def account(name: str, shell: str, password: str) -> Iterator[str]:
    if os.getuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("making a site account needs root and useradd")
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["useradd", "-M", "-d", "/", "-s", shell, name], check=True)
    subprocess.run(["usermod", "-p", password, name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@contextlib.contextmanager
def sshd_for(user: str, site_env: SiteEnv) -> Iterator[Sshd]:
    # Another account must reach authorized_keys: a directory it may traverse.
    base = Path(tempfile.mkdtemp(prefix="mint-bridge-account-"))
    base.chmod(0o755)
    server = start_sshd(base / "sshd", site_env.site_config, user=user)
    (base / "sshd").chmod(0o755)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_no_login_shell_is_named(site_env: SiteEnv, tmp_path: Path, client: str) -> None:
    with account("mbtest-nologin", "/usr/sbin/nologin", "*") as user, sshd_for(
        user, site_env
    ) as server:
        config = bridge_config(tmp_path / "bridge.toml", server, client=client)
        done, connections = run(config, tmp_path)
    message = assert_fast_failure(done, connections, ExitCode.AUTH_FAILED)
    assert "the site account has a no-login shell" in message
    assert "This account is currently not available." in message
    assert "usermod -s /bin/sh" in message


@pytest.mark.parametrize("client", CLIENTS)
def test_a_locked_account_is_not_blamed_on_the_key_alone(
    site_env: SiteEnv, tmp_path: Path, client: str
) -> None:
    with account("mbtest-locked", "/bin/sh", "!") as user, sshd_for(user, site_env) as server:
        config = bridge_config(tmp_path / "bridge.toml", server, client=client)
        done, connections = run(config, tmp_path)
    message = assert_fast_failure(done, connections, ExitCode.AUTH_FAILED)
    assert "refused the key" in message
    assert f"the account {user} is locked, expired or has no valid shell" in message
    assert f"usermod -U -e '' {user}" in message


# --- item: usage errors, the job id line and the job log ------------------------------------


def test_usage_errors_of_run_exit_64(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", "--site", "s", "--no-such-option"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == ExitCode.USAGE == 64
    assert "No such option '--no-such-option'" in done.stderr


def test_the_job_id_is_printed_and_the_job_is_logged(sshd: Sshd, tmp_path: Path) -> None:
    config = bridge_config(tmp_path / "bridge.toml", sshd)
    (tmp_path / "in.dat").write_text("payload")
    done, _ = run(config, tmp_path, "-i", "in.dat", "-p", "nope=1")
    assert done.returncode == ExitCode.PARAMETER_INVALID
    first = done.stderr.splitlines()[0]
    found = re.fullmatch(
        r"mint-bridge: job ([0-9a-f-]{36}) at site s \(checksum\); log: (\S+)", first
    )
    assert found is not None, done.stderr
    job_id, path = found.groups()
    assert path == str(tmp_path / "jobs" / f"{job_id}.log")
    text = Path(path).read_text()
    assert f"{job_id}: running checksum at site s" in text
    assert f"{job_id}: exit {int(ExitCode.PARAMETER_INVALID)}: " in text
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(tmp_path / "jobs").st_mode & 0o777) == "0o700"

    done, _ = run(config, tmp_path, "-i", "in.dat")
    assert done.returncode == 0, done.stderr
    job_id = done.stderr.split()[2]
    text = (tmp_path / "jobs" / f"{job_id}.log").read_text()
    assert f"{job_id}: started at site s" in text and f"{job_id}: exit 0: " in text


@pytest.mark.parametrize("client", CLIENTS)
def test_health_blames_this_node_for_a_missing_key(
    sshd: Sshd, tmp_path: Path, client: str
) -> None:
    key = tmp_path / "id_ed25519"
    config = bridge_config(tmp_path / "bridge.toml", sshd, client=client, identity_file=str(key))
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "health", "--site", "s", "--json"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "MINT_BRIDGE_CONFIG": str(config)},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    checks = {c["check"]: c for c in json.loads(done.stdout)["checks"]}
    auth = checks["ssh.auth"]
    assert auth["status"] == "fail"
    assert f"the SSH key {key} named by identity_file of [sites.s]" in auth["message"]
    assert f"ssh-keygen -t ed25519 -f {key} -N ''" in auth["fix"]
    assert "sshd" not in auth["fix"]
    assert checks["ssh.hello"]["status"] == "unknown"
