"""Names and directories in a work dir, safe by construction.

- An input name is a plain file name: no ``/``, not ``.`` or ``..``, no NUL or other control
  character, no leading ``-`` (so it can never be mistaken for an option), at most 255 bytes,
  and none of the names mint-bridge keeps for itself.
- A result path is a relative path whose every part is such a name.
- Directories are opened relative to a directory file descriptor with ``O_NOFOLLOW``, one part
  at a time, so a symlink never leads a read or a write outside the directory it was given.
- Permission bits are never larger than a file had (no setuid/setgid/sticky, no write for
  group and others).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bridge.core import defaults
from bridge.core.errors import InputRejected, StagingError
from bridge.core.workdir_files import CONTROL_DIR

if TYPE_CHECKING:
    from pathlib import PurePosixPath

# A file being received is written under its name with this suffix, renamed once verified.
PART_SUFFIX = ".mint-bridge-part"
_SAFE_MODE_MASK = 0o755


def check_name(name: object, what: str = "input name") -> str:
    """Return ``name`` if it is a safe plain file name, else raise InputRejected naming the rule."""
    if not isinstance(name, str) or not name:
        raise InputRejected(f"{what} must be a non-empty string", field=what)
    problem = name_problem(name)
    if problem:
        raise InputRejected(f"{what} {name!r:.80} is not allowed: {problem}", field=what)
    return name


def name_problem(name: str) -> str | None:
    if "/" in name or "\\" in name:
        return "it contains a path separator; send a plain file name"
    if name in (".", ".."):
        return "it names a directory"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "it contains a NUL or control character"
    if name.startswith("-"):
        return "it starts with '-', which a program could read as an option"
    if name == CONTROL_DIR or name.endswith(PART_SUFFIX):
        return "the name is reserved by mint-bridge"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: a non-UTF-8 file name or argv byte later
        return "it is not valid UTF-8 text (a lone surrogate or an undecodable byte)"
    if len(encoded) > defaults.MAX_NAME_LENGTH:
        return f"it is longer than {defaults.MAX_NAME_LENGTH} bytes"
    return None


def check_relative_path(path: object) -> PurePosixPath:
    """A result path: relative, each part a safe name. Raises StagingError otherwise."""
    # Imported here: only the receiving ends check result paths, and pathlib (with urllib and
    # ipaddress) would add ~5 ms to every site request, which needs it nowhere else.
    from pathlib import PurePosixPath

    if not isinstance(path, str) or not path:
        raise StagingError("result path must be a non-empty string", field="name")
    pure = PurePosixPath(path)
    if pure.is_absolute() or str(pure) != path or not pure.parts:  # "." names no file
        raise StagingError(f"result path {path!r:.120} is not a plain relative path")
    for part in pure.parts:
        problem = name_problem(part)
        if problem:
            raise StagingError(f"result path {path!r:.120} is not allowed: {problem}")
    return pure


def safe_mode(mode: int) -> int:
    """Permission bits no larger than ``mode``: no setuid/setgid/sticky, no write for others."""
    return mode & _SAFE_MODE_MASK


def current_umask() -> int:
    """The process umask, read without changing it where possible: ``os.umask(0)`` would
    briefly give the agent's other threads a zero umask while they create files."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)  # no /proc: the briefest change, to the strictest mask
    os.umask(mask)
    return mask


def open_dir_nofollow(base_fd: int, parts: Sequence[str], create: bool) -> int:
    """Open (and optionally create) ``parts`` below ``base_fd`` without following any symlink."""
    fd = os.dup(base_fd)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                next_fd = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise StagingError(
                    f"cannot use directory {part!r}: {exc.strerror} "
                    "(a symlink or a file is in the way)"
                ) from exc
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd
