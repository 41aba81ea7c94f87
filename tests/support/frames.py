"""In-memory stand-ins for the wire protocol's byte channel, frames as a sender writes them,
and a site that plays back a script.

For unit tests of both ends (core framing and staging, the site's job start, the bridge's job
run against a scripted site): no sockets, no processes, nothing written to disk.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from bridge.core.protocol import KIND_FILE, KIND_STDOUT, FrameReader, FrameWriter


class LoopbackChannel:
    """A ByteChannel whose ``recv`` returns what ``send_all`` wrote, optionally in small pieces.

    ``piece`` limits how many bytes one ``recv`` returns, so readers must reassemble frames.
    """

    def __init__(self, data: bytes = b"", piece: int | None = None) -> None:
        self.buffer = bytearray(data)
        self.piece = piece
        self.recv_calls = 0

    def recv(self, size: int) -> bytes:
        self.recv_calls += 1
        limit = size if self.piece is None else min(size, self.piece)
        data = bytes(self.buffer[:limit])
        del self.buffer[:limit]
        return data

    def send_all(self, data: bytes | memoryview) -> None:
        self.buffer += bytes(data)


def pipe() -> tuple[FrameWriter, FrameReader, LoopbackChannel]:
    channel = LoopbackChannel()
    return FrameWriter(channel), FrameReader(channel), channel


def write_file_frames(
    writer: FrameWriter,
    body: bytes,
    *,
    chunks: int = 1,
    sha256: str | None = None,
    end: bool = True,
    trailer: bool = True,
) -> None:
    """The body of a file (after its header) as a sender would write it, or a broken variant."""
    step = max(1, -(-len(body) // chunks)) if body else 1
    for start in range(0, len(body), step):
        writer.write_frame(KIND_FILE, body[start : start + step])
    if end:
        writer.write_frame(KIND_FILE, b"")
    if trailer:
        digest = sha256 if sha256 is not None else hashlib.sha256(body).hexdigest()
        writer.write_json({"sha256": digest})


def header_message(name: str, size: int, mode: int = 0o644) -> dict[str, Any]:
    return {"file": name, "size": size, "mode": mode}


class ScriptedChannel:
    """Plays back what a (hostile) site would send; swallows what the bridge sends."""

    def __init__(self, script: bytes) -> None:
        self.script = io.BytesIO(script)

    def recv(self, size: int) -> bytes:
        return self.script.read(min(size, 4096))

    def send_all(self, data: bytes | memoryview) -> None:
        pass

    def close(self) -> None:
        pass


def site_script(name: str, body: bytes, sha: str | None = None, size: int | None = None) -> bytes:
    """What a site sends for a job that returns one file ``name``; ``sha`` and ``size`` let the
    site lie about it."""
    channel = LoopbackChannel()
    out = FrameWriter(channel)
    out.write_json({"ready": True})
    out.write_json({"started": True})
    out.write_frame(KIND_STDOUT, b"log line\n")
    out.write_json({"exit": {"state": "completed", "exit_code": 0, "reason": "ok"}})
    declared = len(body) if size is None else size
    out.write_json({"manifest": [{"name": name, "size": declared, "mode": 0o644}], "skipped": []})
    out.write_json({"file": name, "size": declared, "mode": 0o644})
    out.write_frame(KIND_FILE, body)
    out.write_frame(KIND_FILE, b"")
    out.write_json({"sha256": sha or hashlib.sha256(body).hexdigest()})
    out.write_json({"done": True})
    return bytes(channel.buffer)
