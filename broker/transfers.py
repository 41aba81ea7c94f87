"""Moving request bodies to disk and files back out, in chunks, whatever their size.

Uploads are read from the request stream a chunk at a time (never ``request.data``), written
at the offset the database holds, flushed to disk, and only then counted in the database.
A body cut short keeps what arrived, so the client resumes from there. Downloads stream from
an open file with RFC 9110 ranges (``broker.ranges``). Memory stays constant for a 1 GiB file.

One upload per file at a time: ``KeyedLocks`` serialises requests on the same file (a retry
that overtakes its own cut request waits for it, then sees the settled offset).
This module never decides who may upload (the API does) and never trusts a body's length.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from flask import Response, g, request
from werkzeug.wrappers import Response as BaseResponse
from werkzeug.wsgi import FileWrapper

from bridge.core import defaults as bridge_defaults
from broker import defaults, ranges
from broker.byte_store import ByteStore
from broker.errors import (
    BodyCut,
    ChecksumMismatch,
    RangeNotSatisfiable,
    StorageFull,
    TooLarge,
    Unavailable,
)

OCTETS = "application/octet-stream"


class KeyedLocks:
    """A lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, ...], tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: tuple[str, ...], timeout: float) -> Iterator[None]:
        lock = self._enter(key)
        try:
            if not lock.acquire(timeout=timeout):
                raise Unavailable(
                    f"another request is still writing {'/'.join(key[1:])}; retry shortly",
                    retry_after=5,
                )
            try:
                yield
            finally:
                lock.release()
        finally:
            self._leave(key)

    def _enter(self, key: tuple[str, ...]) -> threading.Lock:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
            return lock

    def _leave(self, key: tuple[str, ...]) -> None:
        with self._guard:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def request_body(timeout: float) -> IO[bytes]:
    """The raw request stream; a client that stops sending for ``timeout`` s is cut off."""
    sock = request.environ.get("gunicorn.socket")
    if sock is not None and hasattr(sock, "settimeout"):
        # gunicorn reads bodies with blocking sockets and no timeout; without this a silent
        # client would hold a thread and the file's upload lock forever. gunicorn resets the
        # socket's mode when the connection goes back to its poller.
        sock.settimeout(timeout)
    return request.stream


def copy_body(
    source: IO[bytes],
    sink: BinaryIO,
    *,
    limit: int | None,
    skip: int = 0,
    digest: Any = None,
    limit_message: Callable[[], str] = lambda: "the request body is too large",
) -> int:
    """Copy the body into ``sink`` after discarding its first ``skip`` bytes. Returns the bytes
    written; TooLarge past ``limit``; BodyCut (with the bytes written) if the body ends early.
    """
    expected = request.content_length
    seen = written = 0
    while True:
        chunk = _read_chunk(source, written)
        if not chunk:
            break
        seen += len(chunk)
        if skip:
            dropped = min(skip, len(chunk))
            chunk, skip = chunk[dropped:], skip - dropped
        if limit is not None and written + len(chunk) > limit:
            raise TooLarge(limit_message())
        sink.write(chunk)
        if digest is not None:
            digest.update(chunk)
        written += len(chunk)
    if expected is not None and seen < expected:
        g.body_failed = True
        raise BodyCut(written)
    return written


def read_small_body(limit: int, timeout: float) -> bytes:
    """At most ``limit + 1`` bytes of a (JSON) body: one more than allowed shows it is too big."""
    try:
        return request_body(timeout).read(limit + 1)
    except Exception as exc:  # as in _read_chunk: the body ended, nothing more to read
        g.body_failed = True
        raise BodyCut(0) from exc


def _read_chunk(source: IO[bytes], written: int) -> bytes:
    try:
        return source.read(defaults.READ_SIZE)
    except Exception as exc:
        # Whatever the server's reader raises here (reset, timeout, broken chunked encoding),
        # the client's body has ended; what was written so far is kept and counted.
        g.body_failed = True  # nothing more can be read from it (see drain_after_error)
        raise BodyCut(written) from exc


def drain_after_error(response: BaseResponse, timeout: float) -> BaseResponse:
    """Read and drop the unread rest of an authenticated request's body after an error answer.

    A client sends its whole body before it reads the answer; if the server answered early
    (409 offset_mismatch, 413, 403) and closed, the client would see a reset connection
    instead of the answer. Bounded (``MAX_DRAIN``, the body timeout) and only for callers
    with a valid token, so nobody can make the broker read without limit.
    """
    if response.status_code < 400 or g.get("principal") is None or g.get("body_failed"):
        return response
    length = request.content_length
    if request.method not in ("POST", "PATCH", "PUT") or (length or 0) > defaults.MAX_DRAIN:
        return response
    stream, left = request_body(timeout), defaults.MAX_DRAIN
    with contextlib.suppress(Exception):  # the client may be gone already; nothing to do then
        while left > 0:
            chunk = stream.read(min(defaults.READ_SIZE, left))
            if not chunk:
                break
            left -= len(chunk)
    return response


def sync(sink: BinaryIO) -> None:
    """Bytes reach the disk before the database counts them (survives a crash or power cut)."""
    sink.flush()
    os.fsync(sink.fileno())


@dataclass(frozen=True)
class UploadTarget:
    """A file that arrives in pieces: inputs (from clients) and results (from agents)."""

    job_id: str
    area: str
    name: str
    size: int
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.area[:-1]} {self.name!r} of job {self.job_id}"


def receive_upload(
    files: ByteStore,
    target: UploadTarget,
    offset: int,
    record: Callable[[int], None],
    timeout: float,
) -> int:
    """Append the request body at ``offset``; ``record(received)`` persists the new count.

    When the declared size is reached the SHA-256 is checked over the whole file; a mismatch
    discards the upload (the count goes back to 0) and raises ChecksumMismatch.
    """
    _check_length(target, offset)
    if offset == target.size:
        return offset  # already complete (a retry whose answer was lost)
    digest = _RUNNING.take(target, offset)
    try:
        received = _append(files, target, offset, digest, record, timeout)
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        # Give back what this body took, so the database (on the same disk) can still commit.
        files.open_for_write(target.job_id, target.area, target.name, offset).close()
        raise StorageFull(
            f"the broker's disk is full: {target.label} could not be stored; ask the broker's "
            "operator to free space in [storage] data_dir, then run the job again"
        ) from exc
    new_offset = offset + received
    if new_offset == target.size:
        _verify(files, target, digest, record)
    elif digest is not None:
        _RUNNING.keep(target, new_offset, digest)
    record(new_offset)
    return new_offset


class RunningDigests:
    """The SHA-256 of each upload in progress, carried from one PATCH to the next.

    Without it a file sent in several requests is read back from disk to hash it at the end.
    ``hashlib`` objects cannot be persisted, so this lives in the worker's memory: after a
    restart, or when another worker took the previous piece, the digest is missing and the
    final check falls back to hashing the file from disk (as before). Bounded by ``LIMIT``.
    """

    LIMIT = 256

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[tuple[str, ...], tuple[int, Any]] = {}

    @staticmethod
    def _key(target: UploadTarget) -> tuple[str, ...]:
        # The declaration is part of the key: a re-declared result never continues an old hash.
        return (target.job_id, target.area, target.name, str(target.size), target.sha256)

    def take(self, target: UploadTarget, offset: int) -> Any:
        """The digest of bytes ``[0, offset)``, or None when it is not known here."""
        with self._guard:
            held = self._held.pop(self._key(target), None)
        if offset == 0:
            return hashlib.sha256()
        if held is not None and held[0] == offset:
            return held[1]
        return None

    def keep(self, target: UploadTarget, offset: int, digest: Any) -> None:
        with self._guard:
            if len(self._held) >= self.LIMIT:
                self._held.pop(next(iter(self._held)))  # the oldest upload loses its hash
            self._held[self._key(target)] = (offset, digest)


_RUNNING = RunningDigests()


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _append(files: ByteStore, target: UploadTarget, offset: int, digest: Any,
            record: Callable[[int], None], timeout: float) -> int:  # fmt: skip
    with files.open_for_write(target.job_id, target.area, target.name, offset) as sink:
        try:
            received = copy_body(
                request_body(timeout), sink, limit=target.size - offset, digest=digest,
                limit_message=lambda: _too_large(target, offset),
            )  # fmt: skip
        except BodyCut as cut:
            sync(sink)
            record(offset + cut.received)
            raise
        except TooLarge:
            sink.truncate(offset)  # nothing of an oversized body counts
            raise
        sync(sink)
    return received


def _check_length(target: UploadTarget, offset: int) -> None:
    length = request.content_length
    if length is not None and offset + length > target.size:
        raise TooLarge(_too_large(target, offset))


def _too_large(target: UploadTarget, offset: int) -> str:
    return (
        f"{target.label} is declared as {target.size} bytes; from offset {offset} at most "
        f"{target.size - offset} more bytes are accepted"
    )


def _verify(files: ByteStore, target: UploadTarget, digest: Any, record: Callable[[int], None]
            ) -> None:  # fmt: skip
    # Without a running digest (a restart, another worker): hash the whole file from disk.
    actual = digest.hexdigest() if digest is not None else files.sha256(
        target.job_id, target.area, target.name
    )
    if actual == target.sha256:
        return
    with files.open_for_write(target.job_id, target.area, target.name, 0):
        pass  # cut to 0 bytes: the corrupt upload is discarded
    record(0)
    raise ChecksumMismatch(
        f"{target.label} arrived with SHA-256 {actual[:16]}..., not the declared "
        f"{target.sha256[:16]}...; the upload was discarded, send it again from offset 0",
        headers={"Upload-Offset": "0"},
    )


def file_response(handle: BinaryIO, size: int, sha256: str) -> BaseResponse:
    """Stream an open file with its ETag, conditional requests and RFC 9110 ranges.

    Preconditions (If-None-Match, If-Match) come first (RFC 9110 13.2.2); ``Range`` counts
    only for a GET that passed them, and ``broker.ranges`` decides which bytes go out.
    """
    try:
        response = Response(
            FileWrapper(handle, bridge_defaults.CHUNK_SIZE),
            mimetype=OCTETS,
            direct_passthrough=True,
        )
        response.content_length = size
        _file_headers(response, sha256)
        response.make_conditional(request.environ)  # 304/412 only: ranges are ours below
        if response.status_code != 200 or request.method != "GET":
            return response
        decision = ranges.plan(
            request.headers.get("Range"), request.headers.get("If-Range"), sha256, size
        )
        if isinstance(decision, ranges.Unsatisfiable):
            raise RangeNotSatisfiable(
                f"the Range asks for no byte of this file of {size} bytes (or is malformed); "
                f"ask for bytes=<first>- with first below {size}, or send no Range",
                size,
            )
        if isinstance(decision, ranges.Partial):
            return _partial_response(handle, size, sha256, decision.spans)
        return response
    except BaseException:
        handle.close()
        raise


def _file_headers(response: BaseResponse, sha256: str) -> None:
    response.set_etag(sha256)
    response.cache_control.no_cache = True
    response.accept_ranges = "bytes"


def _partial_response(handle: BinaryIO, size: int, sha256: str,
                      spans: tuple[tuple[int, int], ...]) -> BaseResponse:  # fmt: skip
    """206: one span as the body, several as multipart/byteranges (RFC 9110 14.6)."""
    if len(spans) == 1:
        first, last = spans[0]
        response = Response(_Spans(handle, [(b"", first, last)], b""), status=206,
                            mimetype=OCTETS, direct_passthrough=True)  # fmt: skip
        response.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        response.content_length = last - first + 1
    else:
        boundary = secrets.token_hex(16)
        pieces = [(_part_header(boundary, i, first, last, size), first, last)
                  for i, (first, last) in enumerate(spans)]  # fmt: skip
        closing = f"\r\n--{boundary}--\r\n".encode()
        response = Response(_Spans(handle, pieces, closing), status=206,
                            direct_passthrough=True)  # fmt: skip
        response.headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        response.content_length = len(closing) + sum(
            len(head) + last - first + 1 for head, first, last in pieces
        )
    _file_headers(response, sha256)
    return response


def _part_header(boundary: str, index: int, first: int, last: int, size: int) -> bytes:
    lead = "\r\n" if index else ""
    return (f"{lead}--{boundary}\r\nContent-Type: {OCTETS}\r\n"
            f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n").encode()  # fmt: skip


class _Spans:
    """The WSGI body of a 206: each span's header, then its bytes read in chunks.

    An object with ``close`` rather than a generator, so the file is closed even when the
    server drops the body before reading any of it.
    """

    def __init__(self, handle: BinaryIO, pieces: list[tuple[bytes, int, int]], closing: bytes
                 ) -> None:  # fmt: skip
        self.handle, self.pieces, self.closing = handle, pieces, closing

    def __iter__(self) -> Iterator[bytes]:
        for head, first, last in self.pieces:
            if head:
                yield head
            yield from self._read(first, last - first + 1)
        if self.closing:
            yield self.closing

    def _read(self, offset: int, left: int) -> Iterator[bytes]:
        fd = self.handle.fileno()
        while left > 0:
            chunk = os.pread(fd, min(bridge_defaults.CHUNK_SIZE, left), offset)
            if not chunk:
                # The file shrank under us (it never should): end the body short so the
                # client sees a cut transfer and resumes, instead of padding with garbage.
                return
            offset, left = offset + len(chunk), left - len(chunk)
            yield chunk

    def close(self) -> None:
        self.handle.close()


def empty_file_response(sha256: str) -> Response:
    """A 0-byte file: nothing to open (it may never have been written to disk). ``Range`` is
    ignored (RFC 9110 14.2 allows it): the whole, empty file is the answer."""
    response = Response(b"", mimetype=OCTETS)
    _file_headers(response, sha256)
    return response
