"""Framing: what goes in comes out, and anything malformed is refused with the right error."""

from __future__ import annotations

import json
import os
import struct

import pytest

from bridge.core.errors import ProtocolError, TransportError
from bridge.core.protocol import (
    HEADER,
    KIND_FILE,
    KIND_JSON,
    KIND_STDERR,
    KIND_STDOUT,
    MAX_DATA_FRAME,
    MAX_JSON_FRAME,
    FdChannel,
    FrameReader,
    FrameWriter,
    copy_frames_to,
    decode_json,
)
from tests.support.frames import LoopbackChannel, pipe


def raw_frame(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">cI", kind, len(payload)) + payload


def test_header_layout_is_kind_byte_and_big_endian_length() -> None:
    writer, _, channel = pipe()
    writer.write_frame(KIND_STDOUT, b"abc")
    assert bytes(channel.buffer) == b"O\x00\x00\x00\x03abc"
    assert HEADER.size == 5


def test_frames_round_trip_in_order_even_when_the_channel_returns_single_bytes() -> None:
    channel = LoopbackChannel(piece=1)
    writer = FrameWriter(channel)
    big = bytes(range(256)) * 1024  # 256 KiB: above the coalescing limit, sent in two writes
    writer.write_json({"op": "hello", "n": 1, "text": "データ"})
    writer.write_frame(KIND_STDOUT, b"line 1\n")
    writer.write_frame(KIND_STDERR, b"")
    writer.write_frame(KIND_FILE, memoryview(big))
    writer.write_frame(KIND_FILE, b"")
    writer.write_json({"done": True})

    reader = FrameReader(LoopbackChannel(bytes(channel.buffer), piece=7))
    assert reader.read_json() == {"op": "hello", "n": 1, "text": "データ"}
    assert reader.read_frame() == (KIND_STDOUT, b"line 1\n")
    assert reader.read_frame() == (KIND_STDERR, b"")
    assert reader.read_frame() == (KIND_FILE, big)
    assert reader.read_frame() == (KIND_FILE, b"")
    assert reader.read_json() == {"done": True}


def test_reader_keeps_bytes_read_past_the_current_frame() -> None:
    data = raw_frame(KIND_STDOUT, b"a") + raw_frame(KIND_STDOUT, b"bc") + raw_frame(b"J", b"{}")
    channel = LoopbackChannel(data)
    reader = FrameReader(channel)
    assert reader.read_frame() == (KIND_STDOUT, b"a")
    assert reader.read_frame() == (KIND_STDOUT, b"bc")
    assert reader.read_json() == {}


def test_json_frames_are_compact_utf8() -> None:
    writer, _, channel = pipe()
    writer.write_json({"a": [1, 2], "b": "é"})
    payload = bytes(channel.buffer[5:])
    assert payload == b'{"a":[1,2],"b":"\\u00e9"}'
    assert json.loads(payload) == {"a": [1, 2], "b": "é"}


@pytest.mark.parametrize("kind", [b"X", b"j", b"\x00", b"{"])
def test_unknown_frame_kind_is_a_protocol_error(kind: bytes) -> None:
    reader = FrameReader(LoopbackChannel(raw_frame(kind, b"{}")))
    with pytest.raises(ProtocolError) as info:
        reader.read_frame()
    assert str(info.value) == (f"unknown frame kind {kind!r}: the peer does not speak our protocol")


def test_oversize_json_frame_is_refused_before_its_body_is_read() -> None:
    # Only the header is there: the reader must refuse without waiting for 4 MiB of body.
    reader = FrameReader(LoopbackChannel(struct.pack(">cI", KIND_JSON, MAX_JSON_FRAME + 1)))
    with pytest.raises(ProtocolError) as info:
        reader.read_frame()
    assert str(info.value) == (
        f"frame of {MAX_JSON_FRAME + 1} bytes exceeds the limit of {MAX_JSON_FRAME}"
    )


@pytest.mark.parametrize("kind", [KIND_FILE, KIND_STDOUT, KIND_STDERR])
def test_oversize_data_frame_is_refused(kind: bytes) -> None:
    reader = FrameReader(LoopbackChannel(struct.pack(">cI", kind, 0xFFFFFFFF)))
    with pytest.raises(ProtocolError, match="exceeds the limit of"):
        reader.read_frame()
    ok = FrameReader(LoopbackChannel(struct.pack(">cI", kind, MAX_DATA_FRAME)))
    with pytest.raises(TransportError):  # the limit itself is allowed; the body is missing
        ok.read_frame()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[1, 2]", "the control message must be a JSON object"),
        (b'"text"', "the control message must be a JSON object"),
        (b"null", "the control message must be a JSON object"),
        (b"42", "the control message must be a JSON object"),
        (b"{", "the control message is not valid JSON: "),
        (b"", "the control message is not valid JSON: "),
        (b'{"a": "\xff"}', "the control message is not UTF-8"),
    ],
)
def test_non_object_or_malformed_json_is_a_protocol_error(payload: bytes, message: str) -> None:
    reader = FrameReader(LoopbackChannel(raw_frame(KIND_JSON, payload)))
    with pytest.raises(ProtocolError) as info:
        reader.read_json()
    assert str(info.value).startswith(message)
    with pytest.raises(ProtocolError):
        decode_json(payload)


def test_read_json_refuses_a_data_frame() -> None:
    reader = FrameReader(LoopbackChannel(raw_frame(KIND_STDOUT, b"{}")))
    with pytest.raises(ProtocolError) as info:
        reader.read_json()
    assert str(info.value) == "expected a control message, got a b'O' frame"


@pytest.mark.parametrize(
    "data",
    [
        b"",  # end of stream between frames
        b"J\x00",  # in the middle of a header
        raw_frame(KIND_JSON, b'{"op": "hello"}')[:-3],  # in the middle of a payload
    ],
    ids=["between-frames", "mid-header", "mid-payload"],
)
def test_eof_is_a_transport_error(data: bytes) -> None:
    reader = FrameReader(LoopbackChannel(data, piece=2))
    with pytest.raises(TransportError) as info:
        reader.read_frame()
    assert str(info.value) == "the connection closed in the middle of a message"
    assert info.value.transient is True


def test_copy_frames_to_feeds_the_sink_and_counts_bytes() -> None:
    writer, reader, _ = pipe()
    for chunk in (b"abc", b"de", b""):
        writer.write_frame(KIND_FILE, chunk)
    writer.write_json({"after": 1})
    got: list[bytes] = []
    assert copy_frames_to(reader, got.append, 5) == 5
    assert got == [b"abc", b"de"]
    assert reader.read_json() == {"after": 1}  # the frame after the body is untouched


def test_copy_frames_to_rejects_more_data_than_declared() -> None:
    writer, reader, _ = pipe()
    writer.write_frame(KIND_FILE, b"abc")
    writer.write_frame(KIND_FILE, b"de")
    writer.write_frame(KIND_FILE, b"")
    got: list[bytes] = []
    with pytest.raises(ProtocolError) as info:
        copy_frames_to(reader, got.append, 4)
    assert str(info.value) == "file is longer than its declared 4 bytes"
    assert got == [b"abc"]  # the chunk that overflowed was never handed to the sink


def test_copy_frames_to_rejects_a_non_file_frame() -> None:
    writer, reader, _ = pipe()
    writer.write_frame(KIND_FILE, b"abc")
    writer.write_json({"sha256": "x"})
    with pytest.raises(ProtocolError) as info:
        copy_frames_to(reader, lambda _: None, 10)
    assert str(info.value) == "a control message arrived in the middle of a file"


def test_an_error_sent_mid_file_is_raised_as_itself() -> None:
    from bridge.core.errors import StagingError

    writer, reader, _ = pipe()
    writer.write_frame(KIND_FILE, b"abc")
    writer.write_json({"error": {"kind": "StagingError", "message": "r.txt shrank while sent"}})
    with pytest.raises(StagingError, match=r"r\.txt shrank while sent"):
        copy_frames_to(reader, lambda _: None, 10)


def test_copy_frames_to_eof_mid_body_is_a_transport_error() -> None:
    writer, reader, _ = pipe()
    writer.write_frame(KIND_FILE, b"abc")
    with pytest.raises(TransportError):
        copy_frames_to(reader, lambda _: None, 10)


def test_fd_channel_over_a_pipe_round_trips_frames() -> None:
    read_fd, write_fd = os.pipe()
    try:
        channel = FdChannel(read_fd, write_fd)
        writer = FrameWriter(channel)
        writer.write_json({"x": 1})
        writer.write_frame(KIND_STDOUT, b"out")
        os.close(write_fd)
        write_fd = -1
        reader = FrameReader(channel)
        assert reader.read_json() == {"x": 1}
        assert reader.read_frame() == (KIND_STDOUT, b"out")
        with pytest.raises(TransportError):
            reader.read_frame()
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_fd_channel_write_to_a_closed_peer_is_a_transport_error() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        with pytest.raises(TransportError) as info:
            FdChannel(-1, write_fd).send_all(b"x")
        assert str(info.value).startswith("writing to the peer failed:")
    finally:
        os.close(write_fd)


def test_fd_channel_read_error_is_a_transport_error() -> None:
    with pytest.raises(TransportError) as info:
        FdChannel(-1, -1).recv(10)
    assert str(info.value).startswith("reading from the peer failed:")
