"""`site.path_shim`: a pyenv or conda shim first on PATH is flagged with what it costs."""

from __future__ import annotations

import sys
from pathlib import Path

from node_setup.health.path_shims import check_path_shim, shim_kind
from node_setup.health.result import Probe, Status


def shim(directory: Path, body: str) -> Path:
    directory.mkdir(parents=True)
    path = directory / "python3"
    path.write_text(body)
    path.chmod(0o755)
    return path


def only(probe: Probe) -> tuple[Status, object, str, str, str]:
    (check,) = probe.snapshot()
    return check.status, check.value, check.unit, check.message, check.fix


def test_a_pyenv_shim_is_flagged_with_its_measured_cost(tmp_path: Path) -> None:
    # A stand-in with pyenv's layout: it works something out (a sleep), then execs Python.
    body = f'#!/bin/sh\n/bin/sleep 0.05\nexec {sys.executable} "$@"\n'
    path = shim(tmp_path / ".pyenv/shims", body)
    probe = Probe("site")
    check_path_shim(probe, path=f"{path.parent}:/usr/bin:/bin")
    status, value, unit, message, fix = only(probe)
    assert status is Status.WARN
    assert unit == "s" and isinstance(value, float) and value >= 0
    assert message.startswith(f"python3 first on PATH is a pyenv shim ({path})")
    assert fix.startswith(f"put {Path(sys.executable).parent} before {path.parent} on the site")


def test_a_plain_interpreter_passes(tmp_path: Path) -> None:
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "python3").symlink_to(sys.executable)
    probe = Probe("site")
    check_path_shim(probe, path=str(directory))
    status, value, _, message, _ = only(probe)
    assert status is Status.OK and value == str(directory / "python3")
    assert message == "python3 on PATH is not a shim"


def test_shim_kinds(tmp_path: Path) -> None:
    assert shim_kind("/home/u/.pyenv/shims/python3") == "pyenv"
    assert shim_kind("/opt/conda/condabin/python3") == "conda"
    conda = shim(tmp_path / "c", "#!/bin/sh\n# conda run wrapper\nexec python3 \"$@\"\n")
    assert shim_kind(str(conda)) == "conda"
    assert shim_kind(sys.executable) is None


def test_only_programs_that_start_python_through_path_are_checked(tmp_path: Path) -> None:
    from node_setup.health.path_shims import check_programs_path, env_interpreters

    via_env = tmp_path / "a.py"
    via_env.write_text("#!/usr/bin/env python3\nprint(1)\n")
    spaced = tmp_path / "b.py"
    spaced.write_text("#! /usr/bin/env -S python3.11 -u\n")
    absolute = tmp_path / "c.py"
    absolute.write_text(f"#!{sys.executable}\n")
    shell = tmp_path / "d.sh"
    shell.write_text("#!/bin/sh\n")
    assert env_interpreters([str(via_env), str(spaced), str(absolute), str(shell)]) == [
        "python3",
        "python3.11",
    ]
    probe = Probe("site")
    check_programs_path(probe, [str(absolute), str(shell)], path="/nonexistent")
    status, value, _, message, _ = only(probe)
    assert status is Status.OK and value is None
    assert message == "no program starts Python through PATH"


def test_a_host_key_message_gives_the_real_fingerprint_never_the_placeholder() -> None:
    from bridge.core.errors import HostKeyRejected
    from node_setup.health.ssh import _offered_fingerprint

    placeholder = HostKeyRejected(
        "host key of site is not pinned; pin it with `mint-bridge setup pin-host-key s "
        "--fingerprint SHA256:...`"
    )
    assert _offered_fingerprint(placeholder) is None  # was "SHA256:...`" in the VALUE column
    real = "SHA256:" + "Q6eoMga+XI4bg2An5bgqyoRu6ITfDUFZOz3beZk6ceg"
    offered = HostKeyRejected(f"host key of s ({real}) does not match; pin with `x {real}`")
    assert _offered_fingerprint(offered) == real
