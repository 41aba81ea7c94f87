"""The bytes of jobs on the broker's disk: inputs, results and logs, one directory per job.

Layout: ``<data>/jobs/<job-id>/inputs/<name>``, ``results/<relative path>``,
``logs/stdout|stderr``. The database says how many of these bytes count (upload offsets, log
sizes); bytes past that are leftovers of an interrupted request and are overwritten.

Every file is opened relative to a directory file descriptor with ``O_NOFOLLOW``, directories
included (``bridge.core.paths.open_dir_nofollow``), so a symlink planted in the data dir never
leads a read or a write elsewhere. Names are checked by the API before they get here and again
here; this module never opens a path that is absolute, has ``..`` or leaves the job directory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from typing import BinaryIO

from bridge.core import defaults
from bridge.core.errors import BridgeError, StagingError
from bridge.core.job import check_job_id
from bridge.core.paths import check_name, check_relative_path, open_dir_nofollow
from broker.errors import NotFound, StateConflict, StoreError, UnsafeName

AREAS = ("inputs", "results", "logs")


class JobFiles:
    """Reads and writes below ``<data_dir>/jobs``; one instance serves every thread."""

    def __init__(self, data_dir: str) -> None:
        self.root = os.path.join(data_dir, "jobs")
        os.makedirs(self.root, mode=0o700, exist_ok=True)

    def create_job_dir(self, job_id: str) -> None:
        with self._dir(job_id, ("logs",), create=True):
            pass

    def open_for_write(self, job_id: str, area: str, name: str, offset: int) -> BinaryIO:
        """The file positioned at ``offset``, cut there (bytes past it never counted)."""
        parts = _parts(area, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with self._dir(job_id, (area, *parts[:-1]), create=True) as dir_fd:
                fd = _open(parts[-1], flags, dir_fd, name)
        except StagingError as exc:
            raise StateConflict(f"cannot write {name!r} of job {job_id}: {exc}") from exc
        try:
            _require_regular(fd, name)
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "wb")

    def open_for_read(self, job_id: str, area: str, name: str) -> BinaryIO:
        parts = _parts(area, name)
        try:
            with self._dir(job_id, (area, *parts[:-1]), create=False) as dir_fd:
                fd = _open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd, name)
        except StagingError as exc:
            raise NotFound(f"{area[:-1]} {name!r} of job {job_id} is not on the broker") from exc
        try:
            _require_regular(fd, name)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    def read_range(self, job_id: str, area: str, name: str, offset: int, count: int) -> bytes:
        try:
            handle = self.open_for_read(job_id, area, name)
        except NotFound:
            return b""
        with handle:
            return os.pread(handle.fileno(), count, offset)

    def sha256(self, job_id: str, area: str, name: str) -> str:
        """Digest of the file, read in chunks (constant memory for any size)."""
        digest = hashlib.sha256()
        with self.open_for_read(job_id, area, name) as handle:
            for chunk in iter(lambda: handle.read(defaults.CHUNK_SIZE), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def remove_area(self, job_id: str, area: str) -> None:
        try:
            with self._dir(job_id, (), create=False) as job_fd:
                _rmtree_at(job_fd, area)
        except StagingError:
            return  # no job directory: nothing to remove

    def remove_job(self, job_id: str) -> None:
        check_job_id(job_id)
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _rmtree_at(root_fd, job_id)
        finally:
            os.close(root_fd)

    @contextlib.contextmanager
    def _dir(self, job_id: str, parts: tuple[str, ...], *, create: bool) -> Iterator[int]:
        """A directory below the job's own, opened without following any symlink."""
        check_job_id(job_id)
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_dir_nofollow(root_fd, (job_id, *parts), create=create)
        finally:
            os.close(root_fd)
        try:
            yield fd
        finally:
            os.close(fd)


def _parts(area: str, name: str) -> tuple[str, ...]:
    """The path below the area, checked again here so no caller can slip past the rules."""
    if area not in AREAS:
        raise NotFound(f"no file area {area!r}")
    try:
        if area == "results":
            return check_relative_path(name).parts
        return (check_name(name, "file name"),)
    except BridgeError as exc:
        raise UnsafeName(str(exc), field="name") from exc


def _open(leaf: str, flags: int, dir_fd: int | None, name: str) -> int:
    try:
        return os.open(leaf, flags, 0o600, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise NotFound(f"{name!r} is not on the broker") from exc
    except IsADirectoryError as exc:
        raise StateConflict(
            f"{name!r} is a directory of other results; choose another name"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink: never read or write through it
            raise StateConflict(f"{name!r} is a symlink on the broker's disk; refused") from exc
        raise StoreError(f"cannot open {name!r} on the broker's disk: {exc.strerror}") from exc


def _require_regular(fd: int, name: str) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise StateConflict(f"{name!r} is not a regular file on the broker's disk")


def _rmtree_at(dir_fd: int, name: str) -> None:
    # shutil.rmtree with dir_fd works on descriptors and never follows a symlink it finds.
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


