"""A plan of changes to directories and files: reviewed, shown, then applied in one go.

Setup commands first describe everything they would do as a ``Plan``. Reviewing the plan
against the disk tells, for each change, whether it creates, replaces, tightens a mode or
leaves things as they are, with a unified diff for file contents. ``--dry-run`` prints the
review and touches nothing; a file that exists with other content is a conflict that stops the
whole plan before anything is written, unless ``--force`` is given or the change is an edit
the plan owns (one line in ``authorized_keys``, one entry in ``known_hosts``).

Applying never writes through a symlink: files are written to a temporary name in the same
directory with their final mode, synced, and renamed over the target. Existing directories
are only ever tightened (``~/.ssh`` 0755 becomes 0700), never loosened, and shared
directories such as ``/tmp`` are left alone.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from node_setup.errors import OverwriteRefused, SetupError

log = logging.getLogger(__name__)


class Action(enum.Enum):
    CREATE = "create"
    REPLACE = "replace"
    CHMOD = "chmod"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"  # would replace a file that differs, and --force was not given


@dataclass(frozen=True)
class MakeDir:
    path: str
    mode: int
    # False for shared directories (a work base of /tmp): created if missing, never chmod'ed.
    tighten: bool = True


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str
    mode: int
    # An edit the plan owns (a line added to authorized_keys): replacing is the point of it,
    # so it is never a conflict. ``needs_force`` marks an owned edit that changes something
    # the admin wrote (an existing line for the same key with other options).
    edit: bool = False
    needs_force: bool = False
    secret: bool = False  # a token: its content never appears in a diff or on the screen


Change = MakeDir | WriteFile


@dataclass(frozen=True)
class Step:
    change: Change
    action: Action
    detail: str = ""  # a diff for files, "0755 -> 0700" for modes
    old_mode: int | None = None


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed after the changes

    def mkdir(self, path: str, mode: int = 0o700, *, tighten: bool = True) -> None:
        self.changes.append(MakeDir(path, mode, tighten))

    def write(self, path: str, content: str, mode: int = 0o600, **kwargs: bool) -> None:
        self.changes.append(WriteFile(path, content, mode, **kwargs))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def review(self, force: bool) -> list[Step]:
        return [_review(change, force) for change in self.changes]


def _review(change: Change, force: bool) -> Step:
    if isinstance(change, MakeDir):
        return _review_dir(change)
    return _review_file(change, force)


def _review_dir(change: MakeDir) -> Step:
    try:
        st = os.lstat(change.path)
    except FileNotFoundError:
        return Step(change, Action.CREATE)
    if not stat.S_ISDIR(st.st_mode):
        raise SetupError(f"{change.path} exists and is not a directory; move it away")
    mode = stat.S_IMODE(st.st_mode)
    if change.tighten and mode & ~change.mode:
        return Step(change, Action.CHMOD, f"{mode:04o} -> {mode & change.mode:04o}", mode)
    return Step(change, Action.UNCHANGED, old_mode=mode)


def _review_file(change: WriteFile, force: bool) -> Step:
    old = _read_existing(change.path)
    if old is None:
        return Step(change, Action.CREATE, _file_diff(change, "", "/dev/null"))
    mode = stat.S_IMODE(os.lstat(change.path).st_mode)
    if old == change.content:
        if mode != change.mode:  # files setup writes get exactly their mode (a program: 0700)
            return Step(change, Action.CHMOD, f"{mode:04o} -> {change.mode:04o}", mode)
        return Step(change, Action.UNCHANGED, old_mode=mode)
    diff = _file_diff(change, old, change.path)
    if (change.edit and not change.needs_force) or force:
        return Step(change, Action.REPLACE, diff, mode)
    return Step(change, Action.CONFLICT, diff, mode)


def _read_existing(path: str) -> str | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        # Replacing would swap the link itself (or a special file) behind the admin's back.
        raise SetupError(f"{path} is a symlink or not a regular file; setup will not write it")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read {path}: {exc}") from exc


def _file_diff(change: WriteFile, old: str, old_name: str) -> str:
    if change.secret:
        return f"(secret: {len(change.content.encode())} bytes, not shown)\n"
    new_name = change.path if old_name == "/dev/null" else change.path + " (new)"
    return _diff(old_name, new_name, old, change.content)


def _diff(old_name: str, new_name: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --- showing ----------------------------------------------------------------------------------


def describe(steps: Iterable[Step], dry_run: bool) -> list[str]:
    """Human lines for the review: what is (or would be) done to each path."""
    lines: list[str] = []
    for step in steps:
        lines.extend(_describe(step, dry_run))
    return lines


def _describe(step: Step, dry_run: bool) -> list[str]:
    change, action = step.change, step.action
    would = "would " if dry_run else ""
    kind = "directory" if isinstance(change, MakeDir) else "file"
    if action is Action.UNCHANGED:
        return [f"unchanged: {kind} {change.path} ({step.old_mode or 0:04o})"]
    if action is Action.CHMOD:
        return [f"{would}change the mode of {change.path}: {step.detail}"]
    if isinstance(change, MakeDir):
        return [f"{would}create directory {change.path} ({change.mode:04o})"]
    verb = {Action.CREATE: "create", Action.REPLACE: "change", Action.CONFLICT: "NOT replace"}
    head = f"{would}{verb[action]} {change.path} ({change.mode:04o})"
    if action is Action.CONFLICT:
        head += ": it exists with other content (diff below); rerun with --force to replace it"
    if action is Action.CREATE and not dry_run:
        return [head]  # the content was shown by --dry-run; a changed file always shows its diff
    return [head, *("    " + line for line in step.detail.splitlines())]


# --- applying ---------------------------------------------------------------------------------


def check_conflicts(steps: list[Step]) -> None:
    conflicts = [step.change.path for step in steps if step.action is Action.CONFLICT]
    if conflicts:
        raise OverwriteRefused(
            f"{len(conflicts)} existing file(s) differ from what setup would write "
            f"({', '.join(conflicts)}); nothing was changed; review the diff and rerun with "
            "--force to replace them"
        )


def apply(steps: list[Step]) -> None:
    check_conflicts(steps)
    for step in steps:
        if step.action is Action.UNCHANGED:
            continue
        change = step.change
        if isinstance(change, MakeDir):
            _apply_dir(change, step)
        elif step.action is Action.CHMOD:
            os.chmod(change.path, change.mode)
        else:
            write_atomic(change.path, change.content, change.mode)
        log.info("%s %s", step.action.value, change.path)


def _apply_dir(change: MakeDir, step: Step) -> None:
    if step.action is Action.CREATE:
        os.makedirs(change.path, mode=change.mode, exist_ok=True)
        os.chmod(change.path, change.mode)  # makedirs' mode is filtered by the umask
    elif step.action is Action.CHMOD:
        os.chmod(change.path, (step.old_mode or 0) & change.mode)


def write_atomic(path: str, content: str, mode: int) -> None:
    """Write ``content`` to ``path`` with ``mode``; readers see the old file or the new one."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".mint-bridge-", dir=directory)
    try:
        os.fchmod(fd, mode)  # before any content is written: a token is never world-readable
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
