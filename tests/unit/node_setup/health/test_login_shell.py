"""``site.login_shell``: tiny real shells run the way sshd runs them, and the verdicts on them."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from node_setup.health import login_shell
from node_setup.health.login_shell import (
    CHECK,
    Account,
    check_login_shell,
    measure_startup,
    sshd_env,
    startup_advice,
)
from node_setup.health.result import Check, Probe, Status
from node_setup.health.site import check_site_side
from tests.support.waiting import wait_until

# Slow only as sshd starts it: the environment and stdin must look like sshd's.
SLOW_UNDER_SSHD = '#!/bin/sh\n[ -n "$SSH_CLIENT" ] && [ -S /dev/stdin ] && sleep 0.2\nexit 0\n'


def shell(directory: Path, text: str, name: str = "fakesh") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def verdict(account: Account, timeout: float = 10) -> Check:
    probe = Probe("site")
    check_login_shell(probe, timeout, account)
    (found,) = probe.snapshot()
    assert found.name == CHECK
    return found


def account(tmp_path: Path, path: str) -> Account:
    return Account("mint", path, str(tmp_path))


def test_the_shell_runs_as_under_sshd(tmp_path: Path) -> None:
    # It reports what it sees on stderr and fails, so the measurement returns at once.
    spy = shell(
        tmp_path / "bin",
        '#!/bin/sh\necho "$SSH_CLIENT|${SHLVL-unset}|$(test -S /dev/stdin && echo socket)|$1" >&2'
        "\nexit 3\n",
    )
    found = measure_startup(spy, sshd_env(account(tmp_path, spy)))
    assert found.returncode == 3
    assert found.stderr == "127.0.0.1 50000 22|unset|socket|-c"


def test_a_fast_shell_is_ok(tmp_path: Path) -> None:
    found = verdict(account(tmp_path, shell(tmp_path / "bin", "#!/bin/sh\nexit 0\n")))
    assert found.status is Status.OK
    assert found.unit == "s" and isinstance(found.value, float) and found.value < 0.05
    assert found.fix == ""


def test_a_shell_slow_under_sshd_warns_with_the_seconds(tmp_path: Path) -> None:
    found = verdict(account(tmp_path, shell(tmp_path / "bin", SLOW_UNDER_SSHD)))
    assert found.status is Status.WARN
    assert found.unit == "s" and isinstance(found.value, float) and 0.2 <= found.value < 2
    seconds = f"{found.value:g} s"
    assert found.message.startswith(f"every SSH job waits {seconds} for ")
    assert "sshd runs the forced command through it" in found.message
    assert "usermod -s /bin/sh mint" in found.fix
    assert found.fix.endswith(f"it saves about {seconds} a job")


def test_a_slow_bash_is_told_about_bashrc(tmp_path: Path) -> None:
    found = verdict(account(tmp_path, shell(tmp_path / "bin", SLOW_UNDER_SSHD, "bash")))
    assert found.status is Status.WARN
    assert found.fix.startswith(
        "keep ~/.bashrc light, or return early at its top when not interactive "
        "(`case $- in *i*) ;; *) return;; esac`), or give the account /bin/sh "
        "(as root: usermod -s /bin/sh mint); it saves about "
    )


@pytest.mark.skipif(not os.path.exists("/bin/bash"), reason="needs bash")
def test_the_advice_for_bashrc_works_on_real_bash(tmp_path: Path) -> None:
    bashrc = tmp_path / ".bashrc"
    bashrc.write_text("sleep 0.2\n")
    real = account(tmp_path, "/bin/bash")
    assert verdict(real).status is Status.WARN  # bash reads ~/.bashrc under sshd
    bashrc.write_text("case $- in *i*) ;; *) return;; esac\nsleep 0.2\n")
    assert verdict(real).status is Status.OK


@pytest.mark.parametrize("nologin", ["/usr/sbin/nologin", "/sbin/nologin", "/bin/false"])
def test_a_nologin_shell_fails(tmp_path: Path, nologin: str) -> None:
    found = verdict(account(tmp_path, nologin))
    assert (found.status, found.value, found.unit) == (Status.FAIL, nologin, "")
    assert found.message == (
        f"the login shell of mint, {nologin}, is a no-login shell: "
        "sshd could never start the forced command"
    )
    assert found.fix == "give the account a shell (as root: usermod -s /bin/sh mint)"


def test_a_missing_shell_fails(tmp_path: Path) -> None:
    gone = str(tmp_path / "bin/zsh")
    found = verdict(account(tmp_path, gone))
    assert (found.status, found.value) == (Status.FAIL, gone)
    assert found.message.endswith(
        f"{gone}, does not exist: sshd could never start the forced command"
    )
    assert "usermod -s /bin/sh mint" in found.fix


def test_a_shell_that_prints_fails(tmp_path: Path) -> None:
    chatty = shell(tmp_path / "bin", "#!/bin/sh\necho 'Welcome to the cluster'\n")
    found = verdict(account(tmp_path, chatty))
    assert (found.status, found.value, found.unit) == (Status.FAIL, 23, "B")
    assert "prints to stdout before any command runs ('Welcome to the cluster')" in found.message
    assert found.fix.startswith("print nothing from the start-up files of fakesh when not")


def test_a_failing_shell_fails_with_its_message(tmp_path: Path) -> None:
    broken = shell(tmp_path / "bin", "#!/bin/sh\necho 'module: command not found' >&2\nexit 127\n")
    found = verdict(account(tmp_path, broken))
    assert (found.status, found.value, found.unit) == (Status.FAIL, 127, "exit status")
    assert found.message.endswith("fails as sshd runs it: module: command not found")


def test_a_hanging_shell_fails_within_the_timeout(tmp_path: Path) -> None:
    runs, sleeper = tmp_path / "runs", tmp_path / "sleeper"
    hangs = shell(tmp_path / "bin",
                  f"#!/bin/sh\necho run >> {runs}\nsleep 30 &\necho $! > {sleeper}\nwait\n")
    found = verdict(account(tmp_path, hangs), timeout=0.5)
    assert runs.read_text() == "run\n"  # one run
    # ... killed with its children: the shell's sleep is gone too (reaped by init).
    wait_until(lambda: not _alive(int(sleeper.read_text())), "the shell's child to be killed",
               limit=10)  # fmt: skip
    assert (found.status, found.value, found.unit) == (Status.FAIL, 0.5, "s")
    assert found.message == f"`{hangs} -c true` did not finish within 0.5 s as sshd runs it"


def test_startup_advice_only_for_a_slow_shell(tmp_path: Path) -> None:
    assert startup_advice(account(tmp_path, shell(tmp_path / "fast", "#!/bin/sh\n"))) is None
    advice = startup_advice(account(tmp_path, shell(tmp_path / "slow", SLOW_UNDER_SSHD)))
    assert advice is not None and advice.startswith("every SSH job waits 0.2")
    assert "usermod -s /bin/sh mint" in advice


# --- in the site-side checks, with the account from the passwd entry -------------------------


def fake_passwd(monkeypatch: pytest.MonkeyPatch, home: Path, shell_path: str) -> None:
    entry = pwd.struct_passwd(("mint", "x", 1000, 1000, "", str(home), shell_path))
    monkeypatch.setattr(login_shell.pwd, "getpwuid", lambda uid: entry)
    monkeypatch.setenv("HOME", str(home))


def site_config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "work").mkdir(exist_ok=True)
    config = tmp_path / "site.toml"
    config.write_text(f'[site]\nname = "t"\nwork_base = "{tmp_path / "work"}"\n{extra}')
    return config


def site_checks(config: Path) -> dict[str, Check]:
    probe = Probe("site")
    check_site_side(str(config), probe, 10)
    return {c.name: c for c in probe.snapshot()}


def test_an_ssh_site_checks_the_accounts_login_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_passwd(monkeypatch, tmp_path, shell(tmp_path / "bin", SLOW_UNDER_SSHD))
    found = site_checks(site_config(tmp_path))
    assert list(found)[-1] == CHECK
    assert found[CHECK].status is Status.WARN
    fake_passwd(monkeypatch, tmp_path, "/usr/sbin/nologin")
    assert site_checks(site_config(tmp_path))[CHECK].status is Status.FAIL


def test_an_empty_shell_field_means_bin_sh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_passwd(monkeypatch, tmp_path, "")
    assert login_shell.this_account() == Account("mint", "/bin/sh", str(tmp_path))


def test_a_pull_site_has_no_login_shell_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_passwd(monkeypatch, tmp_path, "/usr/sbin/nologin")  # fine: sshd never runs its jobs
    token = tmp_path / "agent.token"
    token.write_text("mbt_0123456789ab_Zm9yIHRlc3RzIG9ubHk")
    token.chmod(0o600)
    agent = f'[agent]\nurl = "https://127.0.0.1:9"\ntoken_file = "{token}"\n'
    found = site_checks(site_config(tmp_path, agent))
    assert CHECK not in found
    assert "site.agent" in found


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
