"""Files as byte streams over HTTP: hashing, bounded request bodies, verified resumable writes.

Shared by the bridge's broker client and the site's agent. Memory stays constant whatever the
file size. What this module must never do: make a file appear under its real name before its
size and SHA-256 match, or follow a symlink while writing (the directory is given as a file
descriptor opened with ``O_NOFOLLOW`` by ``bridge.core.paths.open_dir_nofollow``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from types import TracebackType
from typing import BinaryIO

from bridge.core import defaults, progress
from bridge.core.errors import StagingError, TransferCorrupted

# The staging module's suffix for partial files: collect_results never returns a name with
# it, so a partial download in a work dir can never travel back as a result.
from bridge.core.paths import PART_SUFFIX, current_umask, safe_mode


def sha256_file(path: str, size: int) -> str:
    """SHA-256 of the first ``size`` bytes of ``path``; the file must still hold that many."""
    with open(path, "rb") as source:
        return sha256_stream(source, size, path)


def sha256_stream(source: BinaryIO, size: int, label: str) -> str:
    """SHA-256 of ``size`` bytes of ``source`` from its start; leaves it at the start again."""
    digest = hashlib.sha256()
    source.seek(0)
    remaining = size
    while remaining:
        chunk = source.read(min(remaining, defaults.CHUNK_SIZE))
        if not chunk:
            raise StagingError(f"{label} shrank while it was being read ({remaining} short)")
        digest.update(chunk)
        remaining -= len(chunk)
    source.seek(0)
    return digest.hexdigest()


class FileSlice:
    """``length`` bytes of an open file from ``offset``, as a request body of known length.

    requests sends a body that has ``__len__`` with a Content-Length header, streaming it in
    blocks, so an upload of any size never sits in memory. The caller keeps the file open and
    makes a new slice for each attempt.
    """

    def __init__(self, handle: BinaryIO, offset: int, length: int, label: str) -> None:
        self._handle = handle
        self._handle.seek(offset)
        self._position = offset
        self._remaining = length
        self._label = label

    def __len__(self) -> int:
        return self._remaining

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        want = self._remaining if size is None or size < 0 else min(size, self._remaining)
        data = self._handle.read(want)
        if not data:
            raise StagingError(f"{self._label} shrank while it was being sent")
        self._remaining -= len(data)
        self._position += len(data)
        progress.reached(self._position)
        return data


class VerifiedFile:
    """Write a file into ``dir_fd``/``leaf`` from chunks arriving in order, possibly over
    several connections: ``offset`` says where a resumed transfer must continue.

    The bytes go to a private temporary name; ``commit`` renames it over ``leaf`` only if the
    size and SHA-256 are the expected ones (replacing a symlink at ``leaf``, never writing
    through it). ``abort`` (or leaving the ``with`` block on an error) removes the partial file.
    """

    def __init__(
        self, dir_fd: int, leaf: str, size: int, sha256: str, mode: int, label: str
    ) -> None:
        self.dir_fd = dir_fd
        self.leaf = leaf
        self.size = size
        self.sha256 = sha256.lower()
        self.mode = mode
        self.label = label
        self.offset = 0
        self._digest = hashlib.sha256()
        # A digest keeps the name short whatever the leaf's length in bytes; pid and thread
        # make it private to this writer (an agent runs jobs in threads).
        tag = hashlib.sha256(leaf.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self._part = f".{tag}.{os.getpid()}.{threading.get_ident()}{PART_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd: int | None = os.open(self._part, flags, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            raise StagingError(f"cannot create {label}: {exc.strerror}") from exc

    def write(self, chunk: bytes) -> None:
        if self.offset + len(chunk) > self.size:
            raise TransferCorrupted(f"{self.label} is longer than its declared {self.size} bytes")
        assert self._fd is not None
        view = memoryview(chunk)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._digest.update(chunk)
        self.offset += len(chunk)
        progress.reached(self.offset)

    def commit(self) -> None:
        if self.offset != self.size:
            raise TransferCorrupted(
                f"{self.label} arrived truncated: {self.offset} of {self.size} bytes"
            )
        actual = self._digest.hexdigest()
        if actual != self.sha256:
            raise TransferCorrupted(
                f"{self.label} arrived corrupted: SHA-256 {actual[:16]}... does not match "
                f"the expected {self.sha256[:16]}..."
            )
        assert self._fd is not None
        os.fchmod(self._fd, safe_mode(self.mode) & ~current_umask())
        os.close(self._fd)
        self._fd = None
        os.rename(self._part, self.leaf, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(OSError):
                os.unlink(self._part, dir_fd=self.dir_fd)

    def __enter__(self) -> VerifiedFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()  # after commit() this does nothing


__all__ = ["PART_SUFFIX", "FileSlice", "VerifiedFile", "sha256_file", "sha256_stream"]
