"""The bytes of jobs on the broker's disk: inputs, results and logs, one directory per job.

Layout: ``<data>/jobs/<job-id>/inputs/<name>``, ``results/<relative path>``,
``logs/stdout|stderr``. The database says how many of these bytes count (upload offsets, log
sizes); bytes past that are leftovers of an interrupted request and are overwritten.

Every file is opened relative to a directory file descriptor with ``O_NOFOLLOW``, directories
included (``bridge.core.paths.open_dir_nofollow``), so a symlink planted in the data dir never
leads a read or a write elsewhere. Names are checked by the API before they get here and again
here; this module never opens a path that is absolute, has ``..`` or leaves the job directory.

``JobFiles`` is the directory implementation of ``broker.byte_store.ByteStore``: several broker
instances share one ``data_dir`` on a shared filesystem. Bytes the database counts but this
directory lacks (an instance started with another ``data_dir``) raise ``BytesNotShared``
naming the setting; they are never served as empty or padded with zeros.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from bridge.core import defaults
from bridge.core.errors import BridgeError, StagingError
from bridge.core.job import check_job_id
from bridge.core.paths import check_name, check_relative_path, open_dir_nofollow
from broker.byte_store import DATA_DIR_KEY, BytesNotShared
from broker.errors import NotFound, StateConflict, StoreError, UnsafeName

log = logging.getLogger(__name__)

AREAS = ("inputs", "results", "logs")


class JobFiles:
    """Reads and writes below ``<data_dir>/jobs``; one instance serves every thread."""

    def __init__(self, data_dir: str) -> None:
        self.root = os.path.join(data_dir, "jobs")
        os.makedirs(self.root, mode=0o700, exist_ok=True)

    def check(self) -> None:
        probe = f".healthz-{uuid.uuid4().hex}"
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                             dir_fd=root_fd)  # fmt: skip
                try:
                    os.write(fd, b"ok")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.unlink(probe, dir_fd=root_fd)
            finally:
                os.close(root_fd)
        except OSError as exc:
            log.warning("byte store %s: %s", self.root, exc)
            raise StoreError(f"the byte store cannot be written: {exc.strerror}") from exc

    def _not_shared(self, job_id: str, area: str, name: str, counted: int, here: int) -> None:
        log.error(
            "%s: the database counts %d bytes of %s %r but %s holds %d: every broker instance "
            "must use the same %s (a shared filesystem); check %s in this instance's broker.toml",
            job_id, counted, area[:-1], name, self.root, here, DATA_DIR_KEY, DATA_DIR_KEY,
        )  # fmt: skip
        raise BytesNotShared(
            f"job {job_id}: {counted} bytes of {area[:-1]} {name!r} are counted but this broker "
            f"instance holds {here}: its {DATA_DIR_KEY} is not the directory the other "
            f"instances share; set the same {DATA_DIR_KEY} on every instance"
        )

    def _size_here(self, job_id: str, area: str, name: str) -> int:
        try:
            with self.open_for_read(job_id, area, name) as handle:
                return os.fstat(handle.fileno()).st_size
        except NotFound:
            return 0

    def create_job_dir(self, job_id: str) -> None:
        with self._dir(job_id, ("logs",), create=True):
            pass

    def open_for_write(self, job_id: str, area: str, name: str, offset: int) -> BinaryIO:
        """The file positioned at ``offset``, cut there (bytes past it never counted)."""
        parts = _parts(area, name)
        if offset > 0:
            here = self._size_here(job_id, area, name)
            if here < offset:  # never pad counted bytes with zeros
                self._not_shared(job_id, area, name, offset, here)
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

    def open_for_read(self, job_id: str, area: str, name: str, size: int | None = None
                      ) -> BinaryIO:  # fmt: skip
        """The file; with ``size`` (what the database counts), BytesNotShared if it is short."""
        if size is not None:
            here = self._size_here(job_id, area, name)
            if here < size:
                self._not_shared(job_id, area, name, size, here)
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
            data = b""
        else:
            with handle:
                data = os.pread(handle.fileno(), count, offset)
        if len(data) < count:  # bytes are on disk before the database counts them
            self._not_shared(job_id, area, name, offset + count, offset + len(data))
        return data

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


