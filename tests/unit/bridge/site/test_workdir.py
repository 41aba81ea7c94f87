"""A job's work dir: private, created once, control files kept apart from results."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from bridge.core.errors import JobUnknown, ProtocolError, SiteError
from bridge.core.workdir_files import CONTROL_DIR
from bridge.site.workdir import WorkDir


@pytest.fixture
def wd(tmp_path: Path) -> WorkDir:
    return WorkDir(str(tmp_path / "base"), str(uuid.uuid4()))


def test_create_is_private_and_reports_a_retry(wd: WorkDir) -> None:
    assert wd.exists() is False
    assert wd.create() is True
    assert wd.exists() is True
    assert stat.S_IMODE(os.stat(wd.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(wd.control).st_mode) == 0o700
    assert wd.control == os.path.join(wd.path, CONTROL_DIR)
    assert wd.create() is False  # a retried submit finds it


def test_create_refuses_a_symlink_or_file_in_the_way(wd: WorkDir, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.makedirs(os.path.dirname(wd.path))
    os.symlink(target, wd.path)
    with pytest.raises(SiteError) as info:
        wd.create()
    assert str(info.value) == f"{wd.job_id}: work dir path is not a directory"
    assert os.listdir(target) == []


def test_create_recreates_a_missing_control_dir(wd: WorkDir) -> None:
    os.makedirs(wd.path)
    assert wd.create() is False
    assert os.path.isdir(wd.control)


@pytest.mark.parametrize("job_id", ["../etc", "x", "", str(uuid.uuid4()).upper()])
def test_work_dir_needs_a_job_id(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(ProtocolError):
        WorkDir(str(tmp_path), job_id)


def test_native_id_is_durable_and_required(wd: WorkDir) -> None:
    with pytest.raises(JobUnknown) as info:
        wd.require_started()
    assert str(info.value) == f"no started job {wd.job_id} at this site"
    wd.create()
    assert wd.native_id() is None
    with pytest.raises(JobUnknown):
        wd.require_started()
    wd.record_native_id("4242:1.5")
    assert wd.native_id() == "4242:1.5"
    assert wd.require_started() == "4242:1.5"
    assert Path(wd.control_file("native_id")).read_text() == "4242:1.5\n"
    assert not Path(wd.control_file("native_id.tmp")).exists()


def test_json_markers_and_discard_inputs(wd: WorkDir) -> None:
    wd.create()
    wd.write_json("request.json", {"a": [1, 2]})
    assert wd.read_json("request.json") == {"a": [1, 2]}
    assert wd.cancel_requested() is False
    wd.mark_cancel_requested()
    assert wd.cancel_requested() is True
    wd.mark_delivered()
    assert Path(wd.control_file("delivered")).exists()

    Path(wd.path, "in.dat").write_text("x")
    Path(wd.path, "sub").mkdir()
    Path(wd.path, "sub", "f").write_text("y")
    os.symlink("/etc/passwd", os.path.join(wd.path, "link"))
    wd.discard_inputs()
    assert os.listdir(wd.path) == [CONTROL_DIR]
    assert wd.read_json("request.json") == {"a": [1, 2]}

    with wd.locked():
        assert Path(wd.control_file("lock")).exists()
    wd.remove()
    assert not os.path.exists(wd.path)
