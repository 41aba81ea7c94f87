"""Plans of changes: reviewed against the disk, shown, applied all or nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node_setup import changes
from node_setup.changes import Action
from node_setup.errors import OverwriteRefused, SetupError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_things_are_created_with_their_modes(tmp_path: Path) -> None:
    plan = changes.Plan()
    plan.mkdir(str(tmp_path / "a" / "b"), 0o700)
    plan.write(str(tmp_path / "a" / "b" / "f.txt"), "x\n", 0o600)
    steps = plan.review(force=False)
    assert [s.action for s in steps] == [Action.CREATE, Action.CREATE]
    changes.apply(steps)
    assert mode(tmp_path / "a" / "b") == 0o700
    assert (tmp_path / "a" / "b" / "f.txt").read_text() == "x\n"
    assert mode(tmp_path / "a" / "b" / "f.txt") == 0o600
    assert [s.action for s in plan.review(force=False)] == [Action.UNCHANGED, Action.UNCHANGED]


def test_a_file_that_differs_is_a_conflict_and_nothing_is_written(tmp_path: Path) -> None:
    target, other = tmp_path / "site.toml", tmp_path / "new.txt"
    target.write_text("mine\n")
    plan = changes.Plan()
    plan.write(str(other), "new\n")
    plan.write(str(target), "template\n")
    steps = plan.review(force=False)
    assert steps[1].action is Action.CONFLICT
    assert "-mine" in steps[1].detail and "+template" in steps[1].detail
    with pytest.raises(OverwriteRefused) as caught:
        changes.apply(steps)
    assert caught.value.exit_code == 73
    assert target.read_text() == "mine\n"
    assert not other.exists()  # all or nothing
    forced = plan.review(force=True)
    assert forced[1].action is Action.REPLACE
    changes.apply(forced)
    assert target.read_text() == "template\n"


def test_an_owned_edit_replaces_unless_it_needs_force(tmp_path: Path) -> None:
    target = tmp_path / "authorized_keys"
    target.write_text("a\n")
    plan = changes.Plan()
    plan.write(str(target), "a\nb\n", edit=True)
    assert plan.review(force=False)[0].action is Action.REPLACE
    plan = changes.Plan()
    plan.write(str(target), "c\n", edit=True, needs_force=True)
    assert plan.review(force=False)[0].action is Action.CONFLICT


def test_modes_are_tightened_never_loosened(tmp_path: Path) -> None:
    loose, shared = tmp_path / "ssh", tmp_path / "tmp"
    loose.mkdir(mode=0o755)
    shared.mkdir()
    os.chmod(loose, 0o755)
    os.chmod(shared, 0o1777)
    plan = changes.Plan()
    plan.mkdir(str(loose), 0o700)
    plan.mkdir(str(shared), 0o700, tighten=False)
    steps = plan.review(force=False)
    assert [s.action for s in steps] == [Action.CHMOD, Action.UNCHANGED]
    changes.apply(steps)
    assert mode(loose) == 0o700
    assert mode(shared) == 0o1777


def test_a_file_with_the_same_content_gets_its_exact_mode(tmp_path: Path) -> None:
    program = tmp_path / "example.sh"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o600)
    plan = changes.Plan()
    plan.write(str(program), "#!/bin/sh\n", 0o700)
    steps = plan.review(force=False)
    assert steps[0].action is Action.CHMOD
    changes.apply(steps)
    assert mode(program) == 0o700


def test_secret_content_is_never_shown(tmp_path: Path) -> None:
    token = tmp_path / "agent.token"
    plan = changes.Plan()
    plan.write(str(token), "mbt_0123456789ab_s3cr3t-value\n", 0o600, secret=True)
    lines = changes.describe(plan.review(force=False), dry_run=True)
    assert not any("s3cr3t" in line for line in lines)
    assert lines[-1].strip() == "(secret: 30 bytes, not shown)"
    token.write_text("old-secret\n")
    lines = changes.describe(plan.review(force=False), dry_run=True)
    assert not any("secret-value" in line or "old-secret" in line for line in lines)


def test_symlinks_are_never_written_through(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    plan = changes.Plan()
    plan.write(str(tmp_path / "link"), "y")
    with pytest.raises(SetupError, match="symlink"):
        plan.review(force=True)
    assert (tmp_path / "elsewhere").read_text() == "x"


def test_dry_run_lines_say_would(tmp_path: Path) -> None:
    plan = changes.Plan()
    plan.mkdir(str(tmp_path / "d"), 0o700)
    plan.write(str(tmp_path / "d" / "f"), "one\n", 0o600)
    lines = changes.describe(plan.review(force=False), dry_run=True)
    assert lines[0] == f"would create directory {tmp_path / 'd'} (0700)"
    assert lines[1] == f"would create {tmp_path / 'd' / 'f'} (0600)"
    assert "    +one" in lines
    assert not (tmp_path / "d").exists()
