"""Collecting a job's results in its work dir, never following a symlink out of it.

A symlink that points outside the work dir is reported as skipped and never read; one that
points inside is sent as the file it names. Symlinked directories are never descended (no
loops), and the control dir is never collected. Files are opened relative to the work dir's
file descriptor with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from bridge.core.errors import StagingError
from bridge.core.paths import PART_SUFFIX, name_problem, open_dir_nofollow
from bridge.core.workdir_files import CONTROL_DIR


@dataclass(frozen=True)
class ResultFile:
    name: str  # relative POSIX path inside the work dir
    source: str  # relative path to read (for a symlink inside the work dir: its target)
    size: int
    mode: int


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class ReturnRule:
    """What comes back: ``patterns is None`` means every file (the original's behaviour)."""

    patterns: tuple[str, ...] | None
    exclude: tuple[str, ...] = ()

    def excluded(self, relpath: str) -> bool:
        return any(fnmatch.fnmatchcase(relpath, pat) for pat in self.exclude)

    def wants(self, relpath: str) -> bool:
        if self.excluded(relpath):
            return False
        if self.patterns is None:
            return True
        return any(fnmatch.fnmatchcase(relpath, pat) for pat in self.patterns)


def collect_results(
    workdir: str, rule: ReturnRule, unchanged_inputs: dict[str, tuple[int, int]]
) -> tuple[list[ResultFile], list[Skipped]]:
    """Walk ``workdir`` without following symlinks and list what goes back.

    ``unchanged_inputs`` maps input names to their (size, mtime_ns) after staging: inputs the
    job did not touch are not sent back (the bridge already has them).
    """
    root = os.path.realpath(workdir)
    files: list[ResultFile] = []
    skipped: list[Skipped] = []
    for rel, entry in _walk(root, "", skipped):
        if not rule.wants(rel):
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            _collect_symlink(root, rel, entry.path, rule, files, skipped)
        elif stat.S_ISREG(st.st_mode):
            if unchanged_inputs.get(rel) == (st.st_size, st.st_mtime_ns):
                continue
            files.append(ResultFile(rel, rel, st.st_size, stat.S_IMODE(st.st_mode)))
        else:
            skipped.append(Skipped(rel, "not a regular file (device, socket or pipe)"))
    files.sort(key=lambda f: f.name)
    return files, skipped


def _walk(root: str, prefix: str, skipped: list[Skipped]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    try:
        with os.scandir(os.path.join(root, prefix) if prefix else root) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(
            Skipped(prefix.rstrip("/") or ".", f"directory not readable: {exc.strerror}")
        )
        return
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        if not prefix and entry.name == CONTROL_DIR:
            continue
        problem = name_problem(entry.name)
        if problem:
            if not entry.name.endswith(PART_SUFFIX):  # our own partial uploads stay silent
                skipped.append(Skipped(rel, f"name not allowed: {problem}"))
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(root, rel + "/", skipped)
        else:
            yield rel, entry


def _collect_symlink(
    root: str,
    rel: str,
    link_path: str,
    rule: ReturnRule,
    files: list[ResultFile],
    skipped: list[Skipped],
) -> None:
    target = os.path.realpath(link_path)
    if os.path.commonpath([root, target]) != root:
        skipped.append(Skipped(rel, "symlink to a path outside the work dir (not read)"))
        return
    # A link must not bring back what the site keeps: its control dir or an excluded file.
    target_rel = os.path.relpath(target, root)
    if target_rel.split("/", 1)[0] == CONTROL_DIR:  # relpath() gave a normalized path
        skipped.append(Skipped(rel, "symlink into mint-bridge's control dir (not read)"))
        return
    if rule.excluded(target_rel):
        skipped.append(Skipped(rel, "symlink to a file the site does not return (not read)"))
        return
    try:
        st = os.stat(target, follow_symlinks=False)
    except OSError:
        skipped.append(Skipped(rel, "dangling symlink"))
        return
    if not stat.S_ISREG(st.st_mode):
        skipped.append(Skipped(rel, "symlink to a directory or special file (not followed)"))
        return
    source = os.path.relpath(target, root)
    files.append(ResultFile(rel, source, st.st_size, stat.S_IMODE(st.st_mode)))


def open_result_for_reading(root_fd: int, result: ResultFile) -> BinaryIO:
    """Open a collected result below ``root_fd``, following no symlink on the way.

    Even if the job left a process behind that swaps a directory for a symlink after
    collection, the open fails rather than reading outside the work dir.
    """
    parts = result.source.split("/")  # normalized: collect_results built it
    dir_fd = open_dir_nofollow(root_fd, parts[:-1], create=False)
    # O_NONBLOCK: a FIFO swapped in for the file must fail the check below, not block the open.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(parts[-1], flags, dir_fd=dir_fd)
    except OSError as exc:
        raise StagingError(f"cannot read result {result.name}: {exc.strerror}") from exc
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StagingError(f"{result.name} is no longer a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
