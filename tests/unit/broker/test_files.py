"""The broker's file area: writes at offsets, and no symlink or name ever leads outside."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from broker.byte_store import BytesNotShared
from broker.errors import NotFound, StateConflict, UnsafeName
from broker.files import JobFiles


@pytest.fixture
def files(tmp_path: Path) -> JobFiles:
    return JobFiles(str(tmp_path / "data"))


def test_write_at_offsets_cuts_what_was_never_counted(files: JobFiles) -> None:
    job = str(uuid.uuid4())
    with files.open_for_write(job, "results", "sub/dir/r.csv", 0) as sink:
        sink.write(b"0123456789")
    with files.open_for_write(job, "results", "sub/dir/r.csv", 4) as sink:
        sink.write(b"ab")
    with files.open_for_read(job, "results", "sub/dir/r.csv") as source:
        assert source.read() == b"0123ab"
    assert files.sha256(job, "results", "sub/dir/r.csv") == hashlib.sha256(b"0123ab").hexdigest()
    assert files.read_range(job, "results", "sub/dir/r.csv", 2, 3) == b"23a"


@pytest.mark.parametrize(("area", "name"), [("inputs", "../x"), ("inputs", "a/b"),
                                            ("results", "/etc/passwd"), ("results", "a/../b"),
                                            ("results", "a//b"), ("logs", "..")])
def test_unsafe_names_never_reach_the_disk(files: JobFiles, area: str, name: str) -> None:
    with pytest.raises(UnsafeName):
        files.open_for_write(str(uuid.uuid4()), area, name, 0)


def test_a_symlink_planted_in_a_job_dir_is_never_followed(files: JobFiles, tmp_path: Path) -> None:
    job = str(uuid.uuid4())
    files.create_job_dir(job)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    results = Path(files.root) / job / "results"
    results.symlink_to(outside)
    with pytest.raises(StateConflict):
        files.open_for_write(job, "results", "secret", 0)
    with pytest.raises(NotFound):
        files.open_for_read(job, "results", "secret")
    results.unlink()
    results.mkdir()
    (results / "link").symlink_to(outside / "secret")
    with pytest.raises(StateConflict):
        files.open_for_read(job, "results", "link")
    with pytest.raises(StateConflict):
        files.open_for_write(job, "results", "link", 0)
    assert (outside / "secret").read_bytes() == b"secret"


def test_removing_a_job_never_follows_links_out(files: JobFiles, tmp_path: Path) -> None:
    job = str(uuid.uuid4())
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_bytes(b"x")
    with files.open_for_write(job, "inputs", "a", 0) as sink:
        sink.write(b"a")
    os.symlink(keep, Path(files.root) / job / "inputs" / "link")
    files.remove_area(job, "inputs")
    assert not (Path(files.root) / job / "inputs").exists()
    files.remove_job(job)
    files.remove_job(job)  # already gone: no error
    assert (keep / "precious").exists() and not (Path(files.root) / job).exists()


def test_job_ids_must_be_uuids(files: JobFiles) -> None:
    with pytest.raises(Exception, match="UUID4"):
        files.open_for_write("../../etc", "inputs", "a", 0)


# --- bytes the database counts but this instance cannot see (another data_dir) -------------


def test_resuming_a_write_this_instance_never_saw_is_refused_naming_the_setting(
    files: JobFiles,
) -> None:
    job = str(uuid.uuid4())
    with pytest.raises(BytesNotShared, match=r"storage\.data_dir") as caught:
        files.open_for_write(job, "inputs", "a.bin", 4096)
    assert caught.value.status == 503  # a client with several URLs tries another instance
    # Nothing was padded with zeros in its place.
    with pytest.raises(NotFound):
        files.open_for_read(job, "inputs", "a.bin")


def test_reading_counted_bytes_that_are_not_here_is_refused(files: JobFiles) -> None:
    job = str(uuid.uuid4())
    with files.open_for_write(job, "results", "r.csv", 0) as sink:
        sink.write(b"12345")
    with files.open_for_read(job, "results", "r.csv", 5) as source:
        assert source.read() == b"12345"
    with pytest.raises(BytesNotShared, match=r"10 bytes of result 'r\.csv' are counted but "
                       r"this broker instance holds 5"):  # fmt: skip
        files.open_for_read(job, "results", "r.csv", 10)
    with pytest.raises(BytesNotShared, match="holds 0"):
        files.open_for_read(job, "inputs", "never.bin", 3)
    with pytest.raises(BytesNotShared):
        files.read_range(job, "logs", "stdout", 0, 7)
    assert files.read_range(job, "logs", "stdout", 0, 0) == b""
