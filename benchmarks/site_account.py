"""The account a benchmark's site side runs under, and an interpreter that account can reach.

A site runs mint-bridge under a dedicated account (its login shell reads no start-up files for
``sh -c``), not as root. Benchmarks run as root here, and root's ``~/.bashrc`` on this machine
starts pyenv (~0.2 s) in every ``bash -c`` that sshd runs; measuring logins as root would charge
that to mint-bridge and to ``scp`` alike. So, as root, the site side runs as an unprivileged
account (created if missing: a system account with ``/bin/sh`` and no password, left in place
for the next run); otherwise as the current user, as before.

Never changes an account that already exists, nor anything outside the directories it is given.
"""

from __future__ import annotations

import contextlib
import os
import platform
import pwd
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SITE_USER = "mint-bench"
SITE_SHELL = "/bin/sh"
USERADD_NAME_IN_USE = 9


@dataclass(frozen=True)
class SiteAccount:
    user: str
    uid: int
    gid: int
    shell: str
    created: bool  # this run created it (it stays, for the next run)

    @property
    def dedicated(self) -> bool:
        """Whether the site runs under another account than the benchmark."""
        return self.uid != os.geteuid()


def site_account(name: str) -> SiteAccount:
    """``name`` (created if missing) when running as root and ``name`` is set; else the
    current user."""
    created = False
    if os.geteuid() == 0 and name:
        created = ensure_account(name)
        entry = pwd.getpwnam(name)
    else:
        entry = pwd.getpwuid(os.geteuid())
    return SiteAccount(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_shell, created)


def ensure_account(name: str) -> bool:
    """Creates ``name`` if missing; whether this call created it.

    Its password is ``*`` (none can match), not useradd's default ``!`` (locked): the bench's
    sshd runs without PAM, and then refuses a locked account even with a valid key.
    """
    created = False
    if name not in {entry.pw_name for entry in pwd.getpwall()}:
        argv = [
            "useradd", "--system", "--user-group", "--shell", SITE_SHELL,
            "--home-dir", f"/var/lib/{name}", "--create-home", "--password", "*", name,
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode not in (0, USERADD_NAME_IN_USE):  # in use: made meanwhile
            raise RuntimeError(f"useradd {name} failed: {proc.stderr.strip()}")
        created = proc.returncode == 0
    if _password_field(name).startswith("!"):
        raise SystemExit(
            f"account {name} is locked (its password in /etc/shadow starts with '!'), which "
            f"the bench's sshd (no PAM) refuses; unlock it without a password (usermod -p '*' "
            f"{name}) or choose another with --site-user"
        )
    return created


def _password_field(name: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > 1:
                return fields[1]
    return ""


def hand_over(account: SiteAccount, root: Path, owned: Iterable[Path], readable: Path) -> None:
    """Lets the site account reach what it needs under ``root`` (a private temp dir): ``root``
    and ``readable`` (the sshd's dir: its authorized_keys, read as the logging-in user) become
    traversable but not listable, and ``owned`` (with their contents) become the account's.

    Owned, not just writable: the site hard-links pre-made files into work dirs, which
    fs.protected_hardlinks allows only to a file's owner.
    """
    for path in (root, readable):
        path.chmod(0o711)
    for top in owned:
        for path in (top, *top.rglob("*")):
            os.chown(path, account.uid, account.gid, follow_symlinks=False)


def site_python(where: Path) -> str:
    """Shell words that start this interpreter, with this venv's packages, for any account.

    The venv's interpreter may live where the site account cannot go (here pyenv's, under
    ``/root``, mode 0700). Under ``where``: hard links (the same files, no copy) to the
    interpreter, its shared library and its standard library (without site-packages and
    tests), and a venv whose site-packages is this venv's. The interpreter's RUNPATH names
    the original library dir, which the account cannot read, so the loader would fall back
    to the system's libpython, another version; LD_LIBRARY_PATH names the linked one.
    """
    base, venv = where / "base", where / "venv"
    prefix = Path(sys.base_prefix)
    executable = Path(os.path.realpath(sys.executable))
    _link(executable, base / executable.relative_to(prefix))
    for library in (prefix / "lib").glob("libpython*"):
        _link(library, base / "lib" / library.name)
    stdlib = Path(sysconfig.get_path("stdlib"))
    skip = {stdlib / "site-packages", stdlib / "test"}
    for directory, subdirs, files in os.walk(stdlib):
        subdirs[:] = [d for d in subdirs if Path(directory, d) not in skip]
        for name in files:
            source = Path(directory, name)
            _link(source, base / source.relative_to(prefix))
    packages = Path(sysconfig.get_path("purelib"))
    (venv / packages.relative_to(sys.prefix)).parent.mkdir(parents=True)
    (venv / packages.relative_to(sys.prefix)).symlink_to(packages)
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(base / executable.relative_to(prefix))
    (venv / "pyvenv.cfg").write_text(
        f"home = {(base / executable.relative_to(prefix)).parent}\n"
        f"include-system-site-packages = false\nversion = {platform.python_version()}\n"
    )
    return f"LD_LIBRARY_PATH={base / 'lib'} {venv / 'bin' / 'python'}"


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # another file system
        shutil.copy2(source, target, follow_symlinks=False)
