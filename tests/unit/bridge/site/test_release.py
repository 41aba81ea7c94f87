"""Who may release a held job, and what a decision records, on real files and accounts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bridge.site import release
from bridge.site.audit_chain import log_files
from bridge.site.config import load_site_config
from bridge.site.outgoing import Outgoing
from bridge.site.workdir import WorkDir
from tests.support.site_toml import write_site_toml

JOB = "0b6f8a52-3e0c-4c37-9a38-2f4e4f6f9c11"


def site(tmp_path: Path, **extra: str):  # type: ignore[no-untyped-def]
    (tmp_path / "work").mkdir()
    path = write_site_toml(
        tmp_path / "site.toml",
        site={"name": "s", "work_base": tmp_path / "work", "audit_dir": tmp_path / "audit",
              **extra},
        commands={"c": {"program": "/bin/true", "release": "manual"}},
    )  # fmt: skip
    return load_site_config(str(path))


def held_job(config) -> WorkDir:  # type: ignore[no-untyped-def]
    wd = WorkDir(config.work_base, JOB)
    wd.create()
    release.hold(wd, "c", Outgoing())
    return wd


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a dir to another account")
def test_only_the_owner_of_work_base_may_decide(tmp_path: Path) -> None:
    config = site(tmp_path)
    wd = held_job(config)
    os.chown(config.work_base, 65534, 65534)
    with pytest.raises(release.NotAnOperator, match=r"only the site account nobody may"):
        release.decide(config, JOB, release.RELEASED)
    assert release.decision(wd) is None and not log_files(str(tmp_path / "audit"))


def test_a_release_group_member_through_sudo_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = site(tmp_path, release_group="root")
    wd = held_job(config)
    account = release._user_name(os.geteuid())
    monkeypatch.setenv("SUDO_USER", account)
    assert release.decide(config, JOB, release.REJECTED, "no") == account
    assert release.decision(wd)["verdict"] == "rejected"  # type: ignore[index]
    (line,) = [json.loads(x) for x in Path(log_files(str(tmp_path / "audit"))[0]).read_text()
               .splitlines()]  # fmt: skip
    assert (line["event"], line["by"], line["reason"]) == ("rejected", account, "no")
    assert [h.job_id for h in release.held_jobs(config)] == []


def test_a_job_not_held_is_named_with_the_listing_command(tmp_path: Path) -> None:
    config = site(tmp_path)
    WorkDir(config.work_base, JOB).create()
    with pytest.raises(release.ReleaseRefused, match=r"not held .* mint-bridge site held"):
        release.decide(config, JOB, release.RELEASED)


def test_release_must_be_auto_or_manual(tmp_path: Path) -> None:
    path = write_site_toml(
        tmp_path / "site.toml", site={"name": "s", "work_base": tmp_path},
        commands={"c": {"program": "/bin/true", "release": "later"}},
    )  # fmt: skip
    with pytest.raises(Exception, match=r'release.*"auto" or "manual"'):
        load_site_config(str(path))
