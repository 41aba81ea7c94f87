"""bridge.core.streams: a file appears under its name only once its size and SHA-256 match."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.errors import StagingError, TransferCorrupted
from bridge.core.results import ReturnRule, collect_results
from bridge.core.streams import PART_SUFFIX, FileSlice, VerifiedFile, sha256_file, sha256_stream

BODY = b"0123456789" * 1000
DIGEST = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def dir_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_resumed_writes_commit_only_when_verified(tmp_path: Path, dir_fd: int) -> None:
    with VerifiedFile(dir_fd, "out.dat", len(BODY), DIGEST, 0o755, "out.dat") as target:
        target.write(BODY[:3000])
        assert not (tmp_path / "out.dat").exists()
        assert target.offset == 3000  # where a resumed transfer continues
        target.write(BODY[3000:])
        target.commit()
    assert (tmp_path / "out.dat").read_bytes() == BODY
    assert (tmp_path / "out.dat").stat().st_mode & 0o777 == 0o755 & ~current_umask()
    assert os.listdir(tmp_path) == ["out.dat"]


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_wrong_digest_or_size_leaves_nothing(tmp_path: Path, dir_fd: int) -> None:
    with (
        pytest.raises(TransferCorrupted, match="corrupted"),
        VerifiedFile(dir_fd, "a", len(BODY), "0" * 64, 0o644, "a") as target,
    ):
        target.write(BODY)
        target.commit()
    with (
        pytest.raises(TransferCorrupted, match="truncated"),
        VerifiedFile(dir_fd, "b", len(BODY), DIGEST, 0o644, "b") as target,
    ):
        target.write(BODY[:-1])
        target.commit()
    with (
        pytest.raises(TransferCorrupted, match="longer"),
        VerifiedFile(dir_fd, "c", 3, DIGEST, 0o644, "c") as target,
    ):
        target.write(b"abcd")
    assert os.listdir(tmp_path) == []


def test_symlink_at_the_name_is_replaced_not_followed(tmp_path: Path, dir_fd: int) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_bytes(b"keep")
    (tmp_path / "r").symlink_to(outside)
    with VerifiedFile(dir_fd, "r", len(BODY), DIGEST, 0o4777, "r") as target:
        target.write(BODY)
        target.commit()
    assert outside.read_bytes() == b"keep"
    assert not (tmp_path / "r").is_symlink()
    assert (tmp_path / "r").stat().st_mode & 0o7000 == 0  # no setuid from the sender's mode


def test_partial_files_are_never_collected_as_results(tmp_path: Path, dir_fd: int) -> None:
    target = VerifiedFile(dir_fd, "in.dat", len(BODY), DIGEST, 0o644, "in.dat")
    target.write(BODY[:10])
    assert any(name.endswith(PART_SUFFIX) for name in os.listdir(tmp_path))
    files, skipped = collect_results(str(tmp_path), ReturnRule(None), {})
    assert files == [] and skipped == []
    target.abort()
    assert os.listdir(tmp_path) == []


def test_slice_and_hashes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(BODY)
    assert sha256_file(str(path), len(BODY)) == DIGEST
    with open(path, "rb") as handle:
        piece = FileSlice(handle, 10, 25, "f")
        assert len(piece) == 25
        assert piece.read(5) + piece.read() == BODY[10:35]
        assert piece.read() == b""
        assert sha256_stream(handle, 10, "f") == hashlib.sha256(BODY[:10]).hexdigest()
    with pytest.raises(StagingError, match="shrank"):
        sha256_stream(io.BytesIO(b"abc"), 10, "short")


@pytest.mark.parametrize("leaf", ["é" * 127, "計" * 85, "a" * 255])
def test_longest_names_in_any_script(tmp_path: Path, dir_fd: int, leaf: str) -> None:
    assert len(leaf.encode()) <= 255
    with VerifiedFile(dir_fd, leaf, len(BODY), DIGEST, 0o644, "long") as target:
        target.write(BODY)
        target.commit()
    assert (tmp_path / leaf).read_bytes() == BODY
