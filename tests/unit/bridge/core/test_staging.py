"""Staging: names, receiving files, collecting and opening results."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from bridge.core import defaults
from bridge.core.errors import (
    InputRejected,
    ProtocolError,
    StagingError,
    TransferCorrupted,
    TransportError,
)
from bridge.core.paths import check_name, check_relative_path, open_dir_nofollow, safe_mode
from bridge.core.protocol import KIND_FILE, FrameReader, FrameWriter
from bridge.core.results import (
    ResultFile,
    ReturnRule,
    Skipped,
    collect_results,
    open_result_for_reading,
)
from bridge.core.staging import FileHeader, receive_file, send_file
from bridge.core.workdir_files import CONTROL_DIR
from tests.support.frames import LoopbackChannel, header_message, pipe, write_file_frames

# --- names -----------------------------------------------------------------------------------

SEPARATOR = "it contains a path separator; send a plain file name"
DIRECTORY = "it names a directory"
CONTROL = "it contains a NUL or control character"
DASH = "it starts with '-', which a program could read as an option"
RESERVED = "the name is reserved by mint-bridge"
TOO_LONG = f"it is longer than {defaults.MAX_NAME_LENGTH} bytes"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x", SEPARATOR),
        ("a/b", SEPARATOR),
        ("/etc/passwd", SEPARATOR),
        ("a\\b", SEPARATOR),
        ("x/", SEPARATOR),
        (".", DIRECTORY),
        ("..", DIRECTORY),
        ("a\x00b", CONTROL),
        ("a\nb", CONTROL),
        ("tab\there", CONTROL),
        ("bell\x07", CONTROL),
        ("del\x7f", CONTROL),
        ("\x1b[31mred", CONTROL),
        ("-rf", DASH),
        ("--help", DASH),
        ("-", DASH),
        (CONTROL_DIR, RESERVED),
        ("x.mint-bridge-part", RESERVED),
        (".a.123.mint-bridge-part", RESERVED),
        ("a" * 256, TOO_LONG),
        ("é" * 128, TOO_LONG),  # 128 characters but 256 bytes in UTF-8
    ],
)
def test_check_name_rejects_unsafe_names(name: str, problem: str) -> None:
    with pytest.raises(InputRejected) as info:
        check_name(name)
    assert str(info.value) == f"input name {name!r:.80} is not allowed: {problem}"
    assert info.value.field == "input name"


@pytest.mark.parametrize("name", ["", None, 5, b"bytes", ["a"]])
def test_check_name_rejects_non_strings_and_empty(name: object) -> None:
    with pytest.raises(InputRejected) as info:
        check_name(name, "log_file")
    assert str(info.value) == "log_file must be a non-empty string"
    assert info.value.field == "log_file"


@pytest.mark.parametrize(
    "name",
    [
        "input.dat",
        "yield_strength.dat",
        ".hidden",
        "...",
        "a b c",
        "x-1",
        "データ.csv",
        "é" * 127,  # 254 bytes
        "a" * 255,
        "résumé (final).txt",
    ],
)
def test_check_name_accepts_plain_and_unicode_names(name: str) -> None:
    assert check_name(name) == name


def test_check_name_message_uses_the_what_label() -> None:
    with pytest.raises(InputRejected) as info:
        check_name("../log", "log_file")
    assert str(info.value) == f"log_file '../log' is not allowed: {SEPARATOR}"


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("out.csv", ("out.csv",)),
        ("sub/dir/out.csv", ("sub", "dir", "out.csv")),
        ("データ/結果.txt", ("データ", "結果.txt")),
    ],
)
def test_check_relative_path_accepts_relative_paths(path: str, parts: tuple[str, ...]) -> None:
    result = check_relative_path(path)
    assert result == PurePosixPath(path)
    assert result.parts == parts


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/passwd", "result path '/etc/passwd' is not a plain relative path"),
        ("a//b", "result path 'a//b' is not a plain relative path"),
        ("./a", "result path './a' is not a plain relative path"),
        ("a/", "result path 'a/' is not a plain relative path"),
        ("a/./b", "result path 'a/./b' is not a plain relative path"),
        ("../x", f"result path '../x' is not allowed: {DIRECTORY}"),
        ("a/../../x", f"result path 'a/../../x' is not allowed: {DIRECTORY}"),
        ("a/-x", f"result path 'a/-x' is not allowed: {DASH}"),
        ("a/b\x00c", f"result path 'a/b\\x00c' is not allowed: {CONTROL}"),
        (f"{CONTROL_DIR}/stdout", f"result path '{CONTROL_DIR}/stdout' is not allowed: {RESERVED}"),
        ("a\\b", f"result path 'a\\\\b' is not allowed: {SEPARATOR}"),
        (f"d/{'x' * 256}", None),
    ],
)
def test_check_relative_path_rejects_unsafe_paths(path: str, message: str | None) -> None:
    with pytest.raises(StagingError) as info:
        check_relative_path(path)
    if message is not None:
        assert str(info.value) == message
    else:
        assert str(info.value).endswith(TOO_LONG)


@pytest.mark.parametrize("path", ["", None, 3])
def test_check_relative_path_rejects_non_strings(path: object) -> None:
    with pytest.raises(StagingError) as info:
        check_relative_path(path)
    assert str(info.value) == "result path must be a non-empty string"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(0o644, 0o644), (0o777, 0o755), (0o4755, 0o755), (0o2775, 0o755), (0o1777, 0o755),
     (0o600, 0o600), (0o666, 0o644), (0o7777, 0o755)],
)  # fmt: skip
def test_safe_mode_drops_special_bits_and_write_for_others(mode: int, expected: int) -> None:
    assert safe_mode(mode) == expected


# --- receiving -------------------------------------------------------------------------------


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    directory = tmp_path / "dest"
    directory.mkdir()
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield directory, fd
    finally:
        os.close(fd)


@pytest.fixture
def zero_umask() -> Iterator[None]:
    """With umask 0 nothing but our own rule keeps group/other write off a received file."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _receive(body_writer_args: dict[str, Any], header: FileHeader, fd: int) -> str:
    writer, reader, _ = pipe()
    write_file_frames(writer, **body_writer_args)
    return receive_file(reader, header, fd, header.name)


def test_receive_file_writes_exact_bytes_and_a_safe_mode(
    dest: tuple[Path, int], zero_umask: None
) -> None:
    directory, fd = dest
    body = os.urandom(300_000)
    header = FileHeader("data.bin", len(body), 0o6777)
    digest = _receive({"body": body, "chunks": 4}, header, fd)

    target = directory / "data.bin"
    assert target.read_bytes() == body
    assert digest == hashlib.sha256(body).hexdigest()
    mode = target.lstat().st_mode
    assert stat.S_ISREG(mode)
    assert stat.S_IMODE(mode) == 0o755
    assert mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH) == 0
    assert os.listdir(directory) == ["data.bin"]  # no part file left behind


def test_receive_file_respects_the_umask(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    old = os.umask(0o077)
    try:
        _receive({"body": b"x"}, FileHeader("f", 1, 0o755), fd)
    finally:
        os.umask(old)
    assert stat.S_IMODE((directory / "f").stat().st_mode) == 0o700


def test_receive_file_keeps_a_read_only_mode(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    _receive({"body": b"abc"}, FileHeader("ro.txt", 3, 0o444), fd)
    assert stat.S_IMODE((directory / "ro.txt").stat().st_mode) == 0o444
    assert (directory / "ro.txt").read_bytes() == b"abc"


def test_receive_file_of_zero_bytes(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    digest = _receive({"body": b""}, FileHeader("empty", 0, 0o644), fd)
    assert (directory / "empty").read_bytes() == b""
    assert digest == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a" * 255, id="ascii-255-bytes"),
        pytest.param("データ.csv", id="japanese"),
        pytest.param(
            "é" * 127,
            id="latin-254-bytes",
        ),
        pytest.param(
            "データ" * 28,
            id="japanese-252-bytes",
        ),
    ],
)
def test_receive_file_accepts_every_name_check_name_accepts(
    dest: tuple[Path, int], name: str
) -> None:
    directory, fd = dest
    assert check_name(name) == name
    _receive({"body": b"abc"}, FileHeader(name, 3, 0o644), fd)
    assert os.listdir(directory) == [name]
    assert (directory / name).read_bytes() == b"abc"


def test_receive_file_replaces_an_existing_file(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    (directory / "f.txt").write_bytes(b"old content that is longer")
    _receive({"body": b"new"}, FileHeader("f.txt", 3, 0o644), fd)
    assert (directory / "f.txt").read_bytes() == b"new"


def test_corrupted_body_raises_and_leaves_no_file(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    body = b"the real content\n" * 1000
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(TransferCorrupted) as info:
        _receive({"body": body, "sha256": wrong}, FileHeader("c.txt", len(body), 0o644), fd)
    actual = hashlib.sha256(body).hexdigest()
    assert str(info.value) == (
        f"c.txt arrived corrupted: SHA-256 {actual[:16]}... does not match the sender's "
        f"{wrong[:16]}..."
    )
    assert os.listdir(directory) == []


def test_altered_bytes_with_the_original_digest_raise(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    body = b"A" * 1000
    altered = b"A" * 999 + b"B"
    writer, reader, _ = pipe()
    write_file_frames(writer, altered, sha256=hashlib.sha256(body).hexdigest())
    with pytest.raises(TransferCorrupted, match="arrived corrupted"):
        receive_file(reader, FileHeader("a.txt", 1000, 0o644), fd, "a.txt")
    assert os.listdir(directory) == []


def test_corrupted_body_does_not_touch_an_existing_file(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    (directory / "keep.txt").write_bytes(b"previous")
    with pytest.raises(TransferCorrupted):
        _receive({"body": b"new", "sha256": "0" * 64}, FileHeader("keep.txt", 3, 0o644), fd)
    assert (directory / "keep.txt").read_bytes() == b"previous"
    assert os.listdir(directory) == ["keep.txt"]


def test_short_body_raises_truncated_and_leaves_no_file(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    with pytest.raises(TransferCorrupted) as info:
        _receive({"body": b"12345"}, FileHeader("t.txt", 10, 0o644), fd)
    assert str(info.value) == "t.txt arrived truncated: 5 of 10 bytes"
    assert os.listdir(directory) == []


@pytest.mark.parametrize(
    "cut",
    [
        {"end": False, "trailer": False},  # stream ends after the data, no end frame
        {"end": True, "trailer": False},  # stream ends before the SHA-256 trailer
    ],
    ids=["before-end-frame", "before-trailer"],
)
def test_eof_mid_stream_raises_transport_error_and_leaves_no_file(
    dest: tuple[Path, int], cut: dict[str, bool]
) -> None:
    directory, fd = dest
    body = b"x" * 5000
    with pytest.raises(TransportError) as info:
        _receive({"body": body, **cut}, FileHeader("eof.bin", len(body), 0o644), fd)
    assert str(info.value) == "the connection closed in the middle of a message"
    assert os.listdir(directory) == []


def test_eof_in_the_middle_of_a_data_frame_leaves_no_file(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    writer, _, channel = pipe()
    writer.write_frame(KIND_FILE, b"y" * 4000)
    cut = bytes(channel.buffer[:2000])
    reader = FrameReader(LoopbackChannel(cut, piece=512))
    with pytest.raises(TransportError):
        receive_file(reader, FileHeader("mid.bin", 4000, 0o644), fd, "mid.bin")
    assert os.listdir(directory) == []


def test_body_longer_than_declared_raises_and_leaves_no_file(dest: tuple[Path, int]) -> None:
    directory, fd = dest
    with pytest.raises(ProtocolError) as info:
        _receive({"body": b"0123456789"}, FileHeader("long.txt", 4, 0o644), fd)
    assert str(info.value) == "file is longer than its declared 4 bytes"
    assert os.listdir(directory) == []


def test_symlink_at_destination_is_replaced_not_written_through(
    dest: tuple[Path, int], tmp_path: Path
) -> None:
    directory, fd = dest
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not change me")
    victim_stat = victim.stat()
    os.symlink(victim, directory / "in.dat")

    _receive({"body": b"payload"}, FileHeader("in.dat", 7, 0o644), fd)

    assert victim.read_bytes() == b"do not change me"
    assert victim.stat().st_mtime_ns == victim_stat.st_mtime_ns
    assert stat.S_IMODE(victim.stat().st_mode) == stat.S_IMODE(victim_stat.st_mode)
    assert not (directory / "in.dat").is_symlink()
    assert (directory / "in.dat").read_bytes() == b"payload"


def test_dangling_symlink_at_destination_does_not_create_its_target(
    dest: tuple[Path, int], tmp_path: Path
) -> None:
    directory, fd = dest
    target = tmp_path / "would-be-created"
    os.symlink(target, directory / "in.dat")
    _receive({"body": b"abc"}, FileHeader("in.dat", 3, 0o644), fd)
    assert not target.exists()
    assert (directory / "in.dat").read_bytes() == b"abc"


def test_symlink_at_the_part_name_is_never_written_through(
    dest: tuple[Path, int], tmp_path: Path
) -> None:
    directory, fd = dest
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"secret")
    part = directory / f".in.dat.{os.getpid()}.mint-bridge-part"
    os.symlink(victim, part)
    with pytest.raises(StagingError) as info:
        _receive({"body": b"abc"}, FileHeader("in.dat", 3, 0o644), fd)
    assert str(info.value).startswith("cannot create in.dat: ")
    assert victim.read_bytes() == b"secret"
    assert not (directory / "in.dat").exists()


def test_send_file_and_receive_file_round_trip_a_multi_chunk_file(
    dest: tuple[Path, int],
) -> None:
    directory, fd = dest
    body = os.urandom(2 * defaults.CHUNK_SIZE + 12345)
    writer, reader, channel = pipe()
    sent = send_file(writer, "big.bin", io.BytesIO(body), len(body), 0o640)
    header = FileHeader.from_message(reader.read_json())
    assert header == FileHeader("big.bin", len(body), 0o640)
    received = receive_file(reader, header, fd, "big.bin")
    assert sent == received == hashlib.sha256(body).hexdigest()
    assert (directory / "big.bin").read_bytes() == body
    assert channel.buffer == b""  # the trailer was consumed, nothing else was sent


def test_send_file_sends_exactly_size_bytes_of_a_grown_file() -> None:
    writer, reader, _ = pipe()
    digest = send_file(writer, "g", io.BytesIO(b"abcdefgh"), 3, 0o644)
    assert reader.read_json() == {"file": "g", "size": 3, "mode": 0o644}
    assert reader.read_frame() == (KIND_FILE, b"abc")
    assert reader.read_frame() == (KIND_FILE, b"")
    assert reader.read_json() == {"sha256": hashlib.sha256(b"abc").hexdigest()}
    assert digest == hashlib.sha256(b"abc").hexdigest()


def test_send_file_of_a_shrunk_file_raises() -> None:
    writer = FrameWriter(LoopbackChannel())
    with pytest.raises(StagingError) as info:
        send_file(writer, "s", io.BytesIO(b"ab"), 5, 0o644)
    assert str(info.value) == "s shrank while it was being sent (3 bytes short)"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"size": 1}, "file header without a name"),
        ({"file": 3, "size": 1}, "file header without a name"),
        ({"file": "a", "size": -1}, "file header for 'a' has an invalid size -1"),
        ({"file": "a", "size": "1"}, "file header for 'a' has an invalid size '1'"),
        ({"file": "a", "size": True}, "file header for 'a' has an invalid size True"),
        ({"file": "a"}, "file header for 'a' has an invalid size None"),
        ({"file": "a", "size": 1, "mode": "644"}, "file header for 'a' has an invalid mode '644'"),
        ({"file": "a", "size": 1, "mode": False}, "file header for 'a' has an invalid mode False"),
    ],
)
def test_file_header_rejects_malformed_headers(message: dict[str, object], error: str) -> None:
    with pytest.raises(ProtocolError) as info:
        FileHeader.from_message(message)
    assert str(info.value) == error


def test_file_header_defaults_mode() -> None:
    assert FileHeader.from_message({"file": "a", "size": 0}) == FileHeader("a", 0, 0o644)
    assert FileHeader.from_message(header_message("b", 2, 0o755)) == FileHeader("b", 2, 0o755)


def test_open_dir_nofollow_creates_and_refuses_symlinks(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, base / "link")
    base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_dir_nofollow(base_fd, ["a", "b"], create=True)
        os.close(fd)
        assert (base / "a" / "b").is_dir()
        with pytest.raises(StagingError) as info:
            open_dir_nofollow(base_fd, ["link", "x"], create=True)
        assert str(info.value).startswith("cannot use directory 'link': ")
        assert str(info.value).endswith("(a symlink or a file is in the way)")
        assert os.listdir(outside) == []
        with pytest.raises(StagingError):
            open_dir_nofollow(base_fd, ["missing"], create=False)
        assert not (base / "missing").exists()
    finally:
        os.close(base_fd)


# --- collecting results --------------------------------------------------------------------


def _names(files: list[ResultFile]) -> list[str]:
    return [f.name for f in files]


def _reasons(skipped: list[Skipped]) -> dict[str, str]:
    return {s.name: s.reason for s in skipped}


OUTSIDE = "symlink to a path outside the work dir (not read)"
NOT_FOLLOWED = "symlink to a directory or special file (not followed)"
SPECIAL = "not a regular file (device, socket or pipe)"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    wd = tmp_path / "work"
    wd.mkdir()
    (wd / CONTROL_DIR).mkdir()
    (wd / CONTROL_DIR / "stdout").write_text("log")
    (wd / CONTROL_DIR / "request.json").write_text("{}")
    return wd


@pytest.mark.timeout(20)
def test_collect_results_full_walk(workdir: Path, tmp_path: Path) -> None:
    wd = workdir
    (wd / "result.csv").write_text("a,b\n1,2\n")
    os.chmod(wd / "result.csv", 0o640)
    (wd / "sub").mkdir()
    (wd / "sub" / "deep.txt").write_bytes(b"12345")
    # Outside the work dir: a FIFO, so the test would hang if anything opened it.
    secret = tmp_path / "secret-fifo"
    os.mkfifo(secret)
    os.symlink(secret, wd / "leak_abs")
    os.symlink("../secret-fifo", wd / "leak_rel")
    sibling = tmp_path / "work2"  # shares the prefix "work" but is outside
    sibling.mkdir()
    (sibling / "x.txt").write_text("sibling")
    os.symlink(sibling / "x.txt", wd / "leak_prefix")
    os.symlink("sub/deep.txt", wd / "inside_link")
    os.symlink(".", wd / "loop")
    os.symlink("..", wd / "sub" / "up")  # the work dir itself: inside, but a directory
    os.symlink("../..", wd / "sub" / "up2")
    os.symlink("missing-target", wd / "dangling")
    os.mkfifo(wd / "pipe")
    os.symlink("pipe", wd / "link_to_pipe")

    files, skipped = collect_results(str(wd), ReturnRule(None), {})

    assert files == [
        ResultFile("inside_link", "sub/deep.txt", 5, 0o644 & ~_umask()),
        ResultFile("result.csv", "result.csv", 8, 0o640),
        ResultFile("sub/deep.txt", "sub/deep.txt", 5, 0o644 & ~_umask()),
    ]
    assert _reasons(skipped) == {
        "leak_abs": OUTSIDE,
        "leak_rel": OUTSIDE,
        "leak_prefix": OUTSIDE,
        "loop": NOT_FOLLOWED,
        "sub/up": NOT_FOLLOWED,
        "sub/up2": OUTSIDE,
        "dangling": "dangling symlink",
        "pipe": SPECIAL,
        "link_to_pipe": NOT_FOLLOWED,
    }
    assert not any(name.startswith(CONTROL_DIR) for name in _names(files))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_collect_results_skips_unchanged_inputs_only(workdir: Path) -> None:
    wd = workdir
    (wd / "in.dat").write_text("input")
    (wd / "changed.dat").write_text("input")
    st_in = os.stat(wd / "in.dat")
    st_changed = os.stat(wd / "changed.dat")
    unchanged = {
        "in.dat": (st_in.st_size, st_in.st_mtime_ns),
        "changed.dat": (st_changed.st_size, st_changed.st_mtime_ns),
        "gone.dat": (1, 1),
    }
    (wd / "changed.dat").write_text("rewritten by the job")
    os.utime(wd / "changed.dat", ns=(st_changed.st_atime_ns, st_changed.st_mtime_ns + 10**9))

    files, skipped = collect_results(str(wd), ReturnRule(None), unchanged)
    assert _names(files) == ["changed.dat"]
    assert skipped == []


def test_collect_results_input_touched_with_same_size_is_returned(workdir: Path) -> None:
    wd = workdir
    (wd / "in.dat").write_text("aaaa")
    st = os.stat(wd / "in.dat")
    os.utime(wd / "in.dat", ns=(st.st_atime_ns, st.st_mtime_ns + 5))
    files, _ = collect_results(str(wd), ReturnRule(None), {"in.dat": (4, st.st_mtime_ns)})
    assert _names(files) == ["in.dat"]


def test_collect_results_never_returns_the_control_dir(workdir: Path) -> None:
    wd = workdir
    (wd / "sub").mkdir()
    (wd / "sub" / CONTROL_DIR).mkdir()  # only the top-level control dir is ours
    (wd / "sub" / CONTROL_DIR / "f").write_text("x")
    files, skipped = collect_results(str(wd), ReturnRule(None), {})
    assert _names(files) == []
    assert skipped == [
        Skipped("sub/.mint-bridge", "name not allowed: the name is reserved by mint-bridge")
    ]


def test_collect_results_ignores_unsafe_names_and_part_files(workdir: Path) -> None:
    wd = workdir
    (wd / "ok.txt").write_text("ok")
    (wd / f".ok.txt.123{'.mint-bridge-part'}").write_text("partial")
    (wd / "-rf").write_text("dash")
    (wd / "new\nline").write_text("nl")
    files, _ = collect_results(str(wd), ReturnRule(None), {})
    assert _names(files) == ["ok.txt"]


def test_return_rule_globs_and_excludes(workdir: Path) -> None:
    wd = workdir
    for name in ["a.csv", "b.txt", "model.inp", "sub/c.csv", "sub/d.log", "out/e.dat"]:
        path = wd / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(name)

    everything = ReturnRule(None, ("*.inp",))
    files, _ = collect_results(str(wd), everything, {})
    assert _names(files) == ["a.csv", "b.txt", "out/e.dat", "sub/c.csv", "sub/d.log"]

    # fnmatch's '*' also matches '/', so '*.csv' picks CSV files at any depth.
    csv_and_out = ReturnRule(("*.csv", "out/*"), ("sub/*",))
    files, skipped = collect_results(str(wd), csv_and_out, {})
    assert _names(files) == ["a.csv", "out/e.dat"]
    assert skipped == []

    assert ReturnRule(("*.CSV",)).wants("a.csv") is False  # case-sensitive
    assert ReturnRule(("b.txt",)).wants("b.txt") is True
    assert ReturnRule(None).wants("anything/at/all") is True
    assert ReturnRule(("*",), ("*",)).wants("x") is False


def test_return_rule_applies_to_the_link_name_of_a_symlink(workdir: Path) -> None:
    wd = workdir
    (wd / "real.csv").write_text("data")
    os.symlink("real.csv", wd / "alias.txt")
    files, _ = collect_results(str(wd), ReturnRule(("*.txt",)), {})
    assert files == [
        ResultFile("alias.txt", "real.csv", 4, os.stat(wd / "real.csv").st_mode & 0o7777)
    ]


# --- opening results -----------------------------------------------------------------------


@pytest.fixture
def root_fd(workdir: Path) -> Iterator[int]:
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def test_open_result_for_reading_reads_the_collected_file(workdir: Path, root_fd: int) -> None:
    (workdir / "sub").mkdir()
    (workdir / "sub" / "r.txt").write_bytes(b"result bytes")
    os.symlink("sub/r.txt", workdir / "alias")
    files, _ = collect_results(str(workdir), ReturnRule(None), {})
    assert [(f.name, f.source) for f in files] == [
        ("alias", "sub/r.txt"),
        ("sub/r.txt", "sub/r.txt"),
    ]
    for result in files:
        with open_result_for_reading(root_fd, result) as handle:
            assert handle.read() == b"result bytes"


def test_open_result_refuses_an_intermediate_dir_swapped_for_a_symlink(
    workdir: Path, root_fd: int, tmp_path: Path
) -> None:
    (workdir / "sub").mkdir()
    (workdir / "sub" / "r.txt").write_text("harmless")
    files, _ = collect_results(str(workdir), ReturnRule(None), {})
    assert _names(files) == ["sub/r.txt"]

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "r.txt").write_text("SECRET")
    (workdir / "sub" / "r.txt").unlink()
    (workdir / "sub").rmdir()
    os.symlink(outside, workdir / "sub")

    with pytest.raises(StagingError) as info:
        open_result_for_reading(root_fd, files[0])
    assert str(info.value).startswith("cannot use directory 'sub': ")


def test_open_result_refuses_a_file_swapped_for_a_symlink(
    workdir: Path, root_fd: int, tmp_path: Path
) -> None:
    (workdir / "r.txt").write_text("harmless")
    files, _ = collect_results(str(workdir), ReturnRule(None), {})
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    (workdir / "r.txt").unlink()
    os.symlink(secret, workdir / "r.txt")
    with pytest.raises(StagingError) as info:
        open_result_for_reading(root_fd, files[0])
    assert str(info.value).startswith("cannot read result r.txt: ")


def test_open_result_refuses_a_file_swapped_for_a_directory(workdir: Path, root_fd: int) -> None:
    (workdir / "r.txt").write_text("harmless")
    files, _ = collect_results(str(workdir), ReturnRule(None), {})
    (workdir / "r.txt").unlink()
    (workdir / "r.txt").mkdir()
    with pytest.raises(StagingError) as info:
        open_result_for_reading(root_fd, files[0])
    assert str(info.value) == "r.txt is no longer a regular file"


@pytest.mark.timeout(30)
def test_open_result_does_not_block_on_a_file_swapped_for_a_fifo(
    workdir: Path, root_fd: int
) -> None:
    (workdir / "r.txt").write_text("harmless")
    files, _ = collect_results(str(workdir), ReturnRule(None), {})
    (workdir / "r.txt").unlink()
    os.mkfifo(workdir / "r.txt")

    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            open_result_for_reading(root_fd, files[0]).close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(2.0)
    blocked = thread.is_alive()
    if blocked:  # release the blocked open() so the test never hangs
        os.close(os.open(workdir / "r.txt", os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10.0)
    assert not blocked, "open_result_for_reading blocked on a FIFO"
    assert isinstance(outcome[0], StagingError)


def test_unsafe_result_names_are_reported_not_silently_dropped(tmp_path: Path) -> None:
    (tmp_path / "-out.csv").write_text("x")
    (tmp_path / "bad\nname").write_text("x")
    (tmp_path / "good.txt").write_text("x")
    files, skipped = collect_results(str(tmp_path), ReturnRule(None), {})
    assert [f.name for f in files] == ["good.txt"]
    reasons = {s.name: s.reason for s in skipped}
    assert reasons["-out.csv"].startswith("name not allowed: it starts with '-'")
    assert reasons["bad\nname"] == "name not allowed: it contains a NUL or control character"


def test_a_link_never_brings_back_an_excluded_file_or_the_control_dir(tmp_path: Path) -> None:
    (tmp_path / "deck.inp").write_text("PRIVATE MODEL")
    (tmp_path / ".mint-bridge").mkdir()
    (tmp_path / ".mint-bridge" / "request.json").write_text("{}")
    (tmp_path / "copy.txt").symlink_to("deck.inp")
    (tmp_path / "ctl.txt").symlink_to(".mint-bridge/request.json")
    files, skipped = collect_results(str(tmp_path), ReturnRule(None, ("*.inp",)), {})
    assert files == []
    reasons = {s.name: s.reason for s in skipped}
    assert reasons["copy.txt"] == "symlink to a file the site does not return (not read)"
    assert reasons["ctl.txt"] == "symlink into mint-bridge's control dir (not read)"
