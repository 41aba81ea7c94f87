"""The wheel, built and installed by an ordinary account that cannot write the checkout:
it carries the examples, `mint-bridge examples copy` copies them, and a local job runs from
the copy."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "nobody"  # an ordinary account present on every Debian system
SYSTEM_PYTHON = "/usr/bin/python3"  # what a site account has; not a per-user pyenv


def as_account(
    argv: list[str], home: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home),
        "LANG": "C.UTF-8",
    }  # fmt: skip
    return subprocess.run(
        argv, env=env, cwd=home, user=ACCOUNT, group=pwd.getpwnam(ACCOUNT).pw_gid,
        extra_groups=[], capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def account_home() -> Iterator[Path]:
    if os.getuid() != 0:
        unavailable("building as another account needs root to switch to it")
    try:
        entry = pwd.getpwnam(ACCOUNT)
    except KeyError:
        unavailable(f"there is no {ACCOUNT} account")
    # Its own dir, outside pytest's root-only tmp tree, owned by the account.
    home = Path(tempfile.mkdtemp(prefix="mint-bridge-wheel-"))
    os.chown(home, entry.pw_uid, entry.pw_gid)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_account_cannot_write_the_checkout(account_home: Path) -> None:
    done = as_account(["touch", str(ROOT / "probe-write")], account_home)
    assert done.returncode != 0 and "Permission denied" in done.stderr


def test_wheel_from_a_read_only_checkout_installs_and_runs_a_local_job(account_home: Path) -> None:
    wheels = account_home / "wheels"
    built = as_account(["sh", str(ROOT / "scripts/build-wheel.sh"), str(wheels)], account_home)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("mint_bridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for example in ("site.toml", "bridge.toml", "kousoku/solver.py", "kousoku/site.toml"):
        assert f"bridge/_examples/{example}" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA")))
    assert b"License-Expression: MIT" in meta
    venv = account_home / "venv"
    made = as_account([SYSTEM_PYTHON, "-m", "venv", str(venv)], account_home)
    assert made.returncode == 0, made.stderr
    installed = as_account([str(venv / "bin/pip"), "install", "-q", str(wheel)], account_home)
    assert installed.returncode == 0, installed.stderr[-3000:]
    copy = account_home / "my-examples"
    mint_bridge = str(venv / "bin/mint-bridge")
    copied = as_account([mint_bridge, "examples", "copy", str(copy)], account_home)
    assert copied.returncode == 0, copied.stderr
    assert f"the sample site: {copy}/kousoku/site.toml" in copied.stdout
    source = ROOT / "examples/kousoku/solver.py"
    assert hashlib.sha256((copy / "kousoku/solver.py").read_bytes()).hexdigest() == (
        hashlib.sha256(source.read_bytes()).hexdigest()
    )
    assert os.access(copy / "kousoku/solver.py", os.X_OK)
    again = as_account([mint_bridge, "examples", "copy", str(copy)], account_home)
    assert again.returncode == 78 and "is not an empty directory" in again.stderr
    config = account_home / "bridge.toml"
    config.write_text(
        f'[sites.local]\nmethod = "local"\nsite_config = "{copy}/kousoku/site.toml"\n'
    )
    os.chown(config, pwd.getpwnam(ACCOUNT).pw_uid, -1)
    out = account_home / "out"
    inputs = [str(p) for p in sorted((copy / "kousoku/module_inputs").glob("*.dat"))]
    argv = [str(venv / "bin/mint-bridge"), "run", "--config", str(config), "--site", "local",
            "--command", "fatigue", "-p", "cycles=1000", "-o", str(out)]  # fmt: skip
    for path in inputs:
        argv += ["-i", path]
    ran = as_account(argv, account_home)
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = dict(line.split() for line in (out / "fatigue_result.txt").read_text().splitlines())
    assert result["cycles_to_failure"] == "1000"
    assert not (out / "Modeldata.inp").exists()  # the private model stayed at the site
