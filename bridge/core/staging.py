"""Moving files over the protocol's frames into and out of a work dir, verified.

A file travels as a ``J`` header, its body in ``F`` frames and a ``J`` trailer with its
SHA-256; the receiver writes it under a temporary name (``paths.PART_SUFFIX``) with no larger
permissions than it had, and renames it only once its size and SHA-256 match. Every file is
opened relative to a directory file descriptor with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from bridge.core import defaults, progress
from bridge.core.errors import ProtocolError, ResultNotSent, StagingError, TransferCorrupted
from bridge.core.paths import PART_SUFFIX, current_umask, safe_mode
from bridge.core.protocol import KIND_FILE, FrameReader, FrameWriter, copy_frames_to

# Chunks a sender reads and hashes ahead of the one it is sending: enough to keep both busy,
# and a transfer holds a few chunks of memory whatever the file size.
_READ_AHEAD = 2


# --- sending -------------------------------------------------------------------------------


def send_file(
    writer: FrameWriter,
    name: str,
    source: BinaryIO,
    size: int,
    mode: int,
    *,
    sha256: str | None = None,
    unchanged: Callable[[], bool] | None = None,
) -> str:
    """Send one file: header, body in chunks, trailer with SHA-256. Returns the hex digest.

    Exactly ``size`` bytes are sent; a file that shrank meanwhile is an error, one that grew is
    cut at ``size`` (the receiver checks both against the SHA-256 of what was sent). A digest
    the caller already has (``sha256``, from the pass that checked the file) is sent as it is,
    not computed again; ``unchanged`` then says whether the file is still the one it checked.
    A file that cannot be read to its end is withdrawn (``ResultNotSent`` at both ends): the
    receiver drops what it got of it and the connection carries on with the next file.
    """
    writer.write_json({"file": name, "size": size, "mode": mode})
    try:
        with _ReadAhead(source, size, name, hashing=sha256 is None) as body:
            for chunk in body.chunks():
                writer.write_frame(KIND_FILE, chunk)
                progress.moved(len(chunk))
            hexdigest = sha256 or body.hexdigest()
        if unchanged is not None and not unchanged():
            raise StagingError(f"{name} changed after it was checked")
    except StagingError as exc:
        withdraw_file(writer, f"not sent: {exc.message}")
        raise ResultNotSent(exc.message) from exc
    writer.write_frame(KIND_FILE, b"")
    writer.write_json({"sha256": hexdigest})
    return hexdigest


def withdraw_file(writer: FrameWriter, reason: str) -> None:
    """End the file being sent with the reason it is not sent (after its header)."""
    writer.write_json({"error": ResultNotSent(reason).to_wire()})


class _ReadAhead:
    """Reads and hashes a file's body in a helper thread, a few chunks ahead of the sender.

    Reading and hashing release the GIL, so they overlap with sending, which over SSH is
    paramiko's Python code: the critical path of an upload.
    """

    def __init__(self, source: BinaryIO, size: int, name: str, *, hashing: bool = True) -> None:
        self._hashing = hashing
        self._source = source
        self._size = size
        self._name = name
        self._digest = hashlib.sha256()
        self._slots: queue.Queue[bytes | BaseException | None] = queue.Queue(_READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)

    def __enter__(self) -> _ReadAhead:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()  # the sender failed or finished: the reader ends within a chunk
        with contextlib.suppress(queue.Empty):  # and a reader waiting for room is let go
            while True:
                self._slots.get_nowait()
        self._thread.join()

    def chunks(self) -> Iterator[bytes]:
        while (item := self._slots.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def hexdigest(self) -> str:
        """The SHA-256 of the body; complete once ``chunks`` is exhausted."""
        return self._digest.hexdigest()

    def _run(self) -> None:
        remaining = self._size
        try:
            while remaining and not self._stop.is_set():
                chunk = self._read(remaining)
                if self._hashing:
                    self._digest.update(chunk)
                remaining -= len(chunk)
                self._put(chunk)
            self._put(None)
        except BaseException as exc:  # raised again by the sender, in its own thread
            self._put(exc)

    def _read(self, remaining: int) -> bytes:
        try:
            chunk = self._source.read(min(remaining, defaults.CHUNK_SIZE))
        except OSError as exc:  # EIO, a file system gone: this file fails, not the transfer
            raise StagingError(f"{self._name} cannot be read: {exc.strerror}") from exc
        if not chunk:
            raise StagingError(
                f"{self._name} shrank while it was being sent ({remaining} bytes short)"
            )
        return chunk

    def _put(self, item: bytes | BaseException | None) -> None:
        # Never blocks for good: a sender that stopped takes nothing more from the queue.
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._slots.put(item, timeout=0.1)
                return


# --- receiving -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileHeader:
    name: str
    size: int
    mode: int

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> FileHeader:
        name, size, mode = message.get("file"), message.get("size"), message.get("mode", 0o644)
        if not isinstance(name, str):
            raise ProtocolError("file header without a name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"file header for {name!r:.80} has an invalid size {size!r}")
        if not isinstance(mode, int) or isinstance(mode, bool):
            raise ProtocolError(f"file header for {name!r:.80} has an invalid mode {mode!r}")
        return cls(name, size, mode)


def receive_file(reader: FrameReader, header: FileHeader, dir_fd: int, leaf: str) -> str:
    """Receive the body of ``header`` into ``leaf`` inside the directory ``dir_fd``.

    The body goes to a temporary name first; only when size and SHA-256 match is it renamed
    over ``leaf`` (replacing a symlink there, never writing through it). Returns the digest.
    """
    # Cut by bytes, not characters: a valid 255-byte name must still leave room for the suffix.
    stem = leaf.encode("utf-8", "surrogateescape")[:180].decode("utf-8", "ignore")
    part = f".{stem}.{os.getpid()}{PART_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(part, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        raise StagingError(f"cannot create {header.name}: {exc.strerror}") from exc
    try:
        received, hexdigest = _receive_body(reader, header, fd)
        _verify(reader, header, received, hexdigest)
        os.rename(part, leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part, dir_fd=dir_fd)
        raise
    return hexdigest


def _receive_body(reader: FrameReader, header: FileHeader, fd: int) -> tuple[int, str]:
    """Write the body into ``fd`` (closed on return); the bytes received and their SHA-256."""
    digest = hashlib.sha256()

    def write(chunk: memoryview) -> None:
        digest.update(chunk)
        _write_all(fd, chunk)
        progress.moved(len(chunk))

    try:
        received = copy_frames_to(reader, write, header.size)
        os.fchmod(fd, safe_mode(header.mode) & ~current_umask())
    finally:
        os.close(fd)
    return received, digest.hexdigest()


def _write_all(fd: int, data: memoryview) -> None:
    # Straight from the received chunk to the file: no buffer in between to copy it into.
    while data:
        data = data[os.write(fd, data) :]


def _verify(reader: FrameReader, header: FileHeader, received: int, actual: str) -> None:
    if received != header.size:
        raise TransferCorrupted(
            f"{header.name} arrived truncated: {received} of {header.size} bytes"
        )
    trailer = reader.read_json()
    expected = trailer.get("sha256")
    if expected != actual:
        raise TransferCorrupted(
            f"{header.name} arrived corrupted: SHA-256 {actual[:16]}... "
            f"does not match the sender's {str(expected)[:16]}..."
        )
