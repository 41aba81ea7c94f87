"""Framing of the request/response protocol spoken over an SSH channel or a pair of pipes.

A conversation is a sequence of frames. Each frame is a 5-byte header (one kind byte, a 4-byte
big-endian length) and a payload:

- ``J``: a JSON object (control: requests, replies, file headers, exit status, errors);
- ``O`` / ``E``: bytes of the job's stdout / stderr, in order;
- ``F``: the body of the file announced by the previous ``J`` file header, in chunks of raw
  bytes; a
  zero-length ``F`` frame ends the body. The receiver checks the declared size and the SHA-256
  that the sender puts in the next ``J`` frame, so a truncated or altered stream never passes.

File bodies are raw bytes, never base64, and are read and written in fixed-size chunks, so
memory stays constant whatever the file size. This module knows nothing of jobs or files; it
only moves frames. It never interprets payloads as shell text.

A reader may be told what text before the first frame means (``text_first``): the bridge's
reader of a site's replies names a login shell that printed (a ``.bashrc`` that echoes)
instead of reporting a peer that does not speak the protocol.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import struct
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from bridge.core import strict_json
from bridge.core.errors import BridgeError, ProtocolError, TransportError, from_wire

#: Version of the request/response protocol spoken over SSH (or a local pipe).
PROTOCOL_VERSION = 1

HEADER = struct.Struct(">cI")
KIND_JSON = b"J"
KIND_STDOUT = b"O"
KIND_STDERR = b"E"
KIND_FILE = b"F"
KINDS = {KIND_JSON, KIND_STDOUT, KIND_STDERR, KIND_FILE}

# A JSON control frame is small; a peer announcing more is broken or hostile.
MAX_JSON_FRAME = 4 * 1024 * 1024
# Data frames are bounded so a receiver never buffers more than this at once.
MAX_DATA_FRAME = 4 * 1024 * 1024
_COALESCE_BELOW = 64 * 1024
# How much of the text before a first frame an error message quotes.
_TEXT_QUOTED = 120
# How much a reader asks a channel for at once, unless the channel says (``recv_size``) what
# suits it better. Every byte is then hashed and written straight from the received chunk.
RECV_SIZE = 1024 * 1024
# A pipe this large (Linux's default limit for unprivileged users) moves a bulk transfer in a
# few large writes and reads instead of many 64 KiB ones, with fewer wake-ups of the peer.
PIPE_SIZE = 1024 * 1024


class ByteChannel(Protocol):
    """The two operations the protocol needs from a transport."""

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at end of stream."""

    def send_all(self, data: bytes | memoryview) -> None:
        """All of ``data``, blocking as needed."""


class FdChannel:
    """A ByteChannel over two file descriptors (stdin/stdout of the site entry, or pipes)."""

    recv_size = PIPE_SIZE

    def __init__(self, read_fd: int, write_fd: int, idle_timeout: float | None = None) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        #: Seconds a read may wait for the peer's next byte; ``None`` waits as long as it takes.
        self.idle_timeout = idle_timeout
        for fd in (read_fd, write_fd):
            _enlarge_pipe(fd)

    def recv(self, size: int) -> bytes:
        if self.idle_timeout is not None and not _readable(self.read_fd, self.idle_timeout):
            raise PeerIdle(
                f"the peer sent nothing for {self.idle_timeout:g} s; closing the connection",
                idle_seconds=self.idle_timeout,
            )
        try:
            return os.read(self.read_fd, size)
        except OSError as exc:
            raise TransportError(f"reading from the peer failed: {exc}") from exc

    def send_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.write_fd, view)
                view = view[written:]
        except OSError as exc:  # BrokenPipeError when the peer went away
            raise TransportError(f"writing to the peer failed: {exc}") from exc


class PeerIdle(TransportError):
    """A read waited longer than the channel's idle deadline: the peer sent nothing."""

    def __init__(self, message: str, idle_seconds: float) -> None:
        super().__init__(message)
        self.idle_seconds = idle_seconds


def _readable(fd: int, timeout: float) -> bool:
    # poll, not select: any fd number works, and POLLHUP (the peer closed) counts as readable
    # so the read that follows sees the end of the stream.
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    try:
        return bool(poller.poll(max(0, int(timeout * 1000))))
    except OSError as exc:
        raise TransportError(f"waiting for the peer failed: {exc}") from exc


def _enlarge_pipe(fd: int) -> None:
    # Best effort: no such call (not Linux), not a pipe (a socket, a file, a closed fd) or over
    # the system's limit all leave the pipe as it was.
    get_size, set_size = getattr(fcntl, "F_GETPIPE_SZ", None), getattr(fcntl, "F_SETPIPE_SZ", None)
    if get_size is None or set_size is None:
        return
    with contextlib.suppress(OSError, ValueError):
        if fcntl.fcntl(fd, get_size) < PIPE_SIZE:
            fcntl.fcntl(fd, set_size, PIPE_SIZE)


class FrameReader:
    """Reads frames from a ByteChannel, keeping whatever it read past the current frame.

    At most one received chunk is held; file data is handed out as views into it, so a bulk
    transfer costs no copy here.
    """

    def __init__(
        self, channel: ByteChannel, *, text_first: Callable[[str], BridgeError] | None = None
    ) -> None:
        self._channel = channel
        self._recv_size: int = getattr(channel, "recv_size", RECV_SIZE)
        self._pending = memoryview(b"")
        # What printable text instead of the first frame means; None: a plain ProtocolError.
        self._text_first = text_first
        self._first = True

    def _take(self, limit: int) -> memoryview:
        """Between 1 and ``limit`` next bytes, receiving only when nothing is pending."""
        if not self._pending:
            chunk = self._channel.recv(max(limit, self._recv_size))
            if not chunk:
                raise TransportError("the connection closed in the middle of a message")
            self._pending = memoryview(chunk)
        piece = self._pending[:limit]
        self._pending = self._pending[limit:]
        return piece

    def _read_exact(self, size: int) -> bytes:
        pieces = []
        while size:
            piece = self._take(size)
            pieces.append(piece)
            size -= len(piece)
        return b"".join(pieces)

    def read_header(self) -> tuple[bytes, int]:
        """The next frame's ``(kind, length)``, both checked; its payload comes next."""
        raw = self._read_exact(HEADER.size)
        kind, length = HEADER.unpack(raw)
        limit = MAX_JSON_FRAME if kind == KIND_JSON else MAX_DATA_FRAME
        if self._first and self._text_first is not None and _looks_like_text(raw, limit):
            raise self._text_first(self._quote_text(raw))
        if kind not in KINDS:
            raise ProtocolError(
                f"unknown frame kind {kind!r}: the peer does not speak our protocol"
            )
        if length > limit:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
        self._first = False
        return kind, length

    def _quote_text(self, raw: bytes) -> str:
        """The first line of the text that came instead of a frame, from what is at hand (never
        waiting for more: a shell that printed a short line may be waiting for input)."""
        data = (raw + bytes(self._pending[: _TEXT_QUOTED * 4])).lstrip(b" \t\r\n")
        end = next((i for i, byte in enumerate(data) if byte < 0x20 and byte != 0x09), None)
        line = data[:end].decode("utf-8", "replace").strip()
        return line[:_TEXT_QUOTED] or repr(data[:_TEXT_QUOTED])

    def read_payload(self, length: int) -> Iterator[memoryview]:
        """A payload of ``length`` bytes in pieces; each pins a received chunk: do not keep it."""
        while length:
            piece = self._take(length)
            length -= len(piece)
            yield piece

    def read_frame(self) -> tuple[bytes, bytes]:
        """The next ``(kind, payload)``; TransportError on end of stream."""
        kind, length = self.read_header()
        return kind, self._read_exact(length)

    def read_json(self) -> dict[str, Any]:
        """The next frame, which must be a JSON object."""
        kind, payload = self.read_frame()
        if kind != KIND_JSON:
            raise ProtocolError(f"expected a control message, got a {kind!r} frame")
        return decode_json(payload)


def _looks_like_text(header: bytes, limit: int) -> bool:
    """Whether a first "header" is text: a printable first byte that is no frame kind, or a
    frame kind followed by a length that only text gives (four printable bytes are over any
    limit)."""
    first = header[0]
    printable = 0x20 <= first < 0x7F or first >= 0x80 or first in b"\t\r\n"
    if header[:1] not in KINDS:
        return printable
    return all(0x20 <= byte < 0x7F for byte in header[1:]) and (
        int.from_bytes(header[1:], "big") > limit
    )


def decode_json(payload: bytes) -> dict[str, Any]:
    # StrictJsonError is a ProtocolError: the site entry answers it with an error frame.
    return strict_json.loads_object(payload, what="the control message")


class FrameWriter:
    """Writes frames to a ByteChannel."""

    def __init__(self, channel: ByteChannel) -> None:
        self._channel = channel

    def write_frame(self, kind: bytes, payload: bytes | memoryview) -> None:
        header = HEADER.pack(kind, len(payload))
        if len(payload) <= _COALESCE_BELOW:
            # One write for small frames: fewer SSH packets and syscalls for log lines.
            self._channel.send_all(header + bytes(payload))
        else:
            self._channel.send_all(header)
            self._channel.send_all(payload)

    def write_json(self, message: dict[str, Any]) -> None:
        self.write_frame(KIND_JSON, json.dumps(message, separators=(",", ":")).encode())


def copy_frames_to(
    reader: FrameReader, sink: Callable[[memoryview], None], expected_size: int
) -> int:
    """Feed the payload of ``F`` frames to ``sink`` until the zero-length end frame.

    The sink gets the bytes in order, in pieces that need not match the frames, and must not
    keep a piece after it returns. Returns the number of bytes received.
    """
    received = 0
    while True:
        kind, length = reader.read_header()
        if kind == KIND_JSON:  # the sender stopped mid-file to say why
            message = decode_json(b"".join(bytes(p) for p in reader.read_payload(length)))
            if "error" in message:
                raise from_wire(message["error"])
            raise ProtocolError("a control message arrived in the middle of a file")
        if kind != KIND_FILE:
            raise ProtocolError(f"expected file data, got a {kind!r} frame")
        if not length:
            return received
        received += length
        if received > expected_size:  # known from the header: no byte of it is read
            raise ProtocolError(f"file is longer than its declared {expected_size} bytes")
        for piece in reader.read_payload(length):
            sink(piece)
