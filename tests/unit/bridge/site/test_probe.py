"""The site's side of the probe and of its config errors: accepting and answering the probe,
its listing in ``hello``, the reserved name, and the messages that name file, key and fix."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import uuid
from pathlib import Path

import pytest

from bridge.core.errors import (
    CommandNotAllowed,
    ConfigError,
    ExitCode,
    InputRejected,
    SiteConfigInvalid,
    SiteError,
    StagingError,
    from_wire,
)
from bridge.core.job import InputDecl, JobRequest, JobState
from bridge.core.probe import (
    PROBE_COMMAND,
    PROBE_INPUT,
    PROBE_MAX_INPUT,
    PROBE_OUTPUT,
    PROBE_REPORT,
    ProbeReport,
)
from bridge.core.protocol import FdChannel, FrameReader, FrameWriter
from bridge.site import probe
from bridge.site.accepted_job import AcceptedJob, collect_job_results
from bridge.site.config import SiteConfig, load_site_config
from bridge.site.ssh_entry import answer_error, site_config_error
from bridge.site.workdir import WorkDir
from tests.support.site_toml import write_site_toml


def make_site(tmp_path: Path, program: str = "/bin/true", **site: object) -> SiteConfig:
    (tmp_path / "work").mkdir(exist_ok=True)
    path = write_site_toml(
        tmp_path / "site.toml",
        site={"name": "s", "work_base": tmp_path / "work", **site},
        commands={"solve": {"program": program}, "echo": {"program": "/bin/echo"}},
    )
    return load_site_config(str(path))


def probe_request(size: int = 5, name: str = PROBE_INPUT, **params: str) -> JobRequest:
    return JobRequest(str(uuid.uuid4()), PROBE_COMMAND, dict(params), (InputDecl(name, size),))


# --- listing and the reserved name -----------------------------------------------------------


def test_hello_lists_the_probe_as_builtin_only_while_allowed(tmp_path: Path) -> None:
    listed = {c["name"]: c for c in make_site(tmp_path).describe()}
    assert listed[PROBE_COMMAND] == {
        "name": PROBE_COMMAND,
        "description": "built-in probe: copies its input back, runs no site program",
        "params": {},
        "builtin": True,
    }
    assert "builtin" not in listed["solve"]
    off = make_site(tmp_path, allow_probe=False)
    assert off.allow_probe is False
    assert PROBE_COMMAND not in {c["name"] for c in off.describe()}


def test_a_command_may_not_take_the_probes_name(tmp_path: Path) -> None:
    path = write_site_toml(
        tmp_path / "site.toml", site={"name": "s"}, commands={PROBE_COMMAND: {"program": "/x"}}
    )
    with pytest.raises(ConfigError) as info:
        load_site_config(str(path))
    assert str(info.value) == (
        f"{path}: commands.{PROBE_COMMAND}: this name is reserved for the built-in probe "
        "(turn it off with [site] allow_probe = false); give the command another name"
    )


def test_allow_probe_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"site\.allow_probe: must be a bool, not str"):
        make_site(tmp_path, allow_probe="no")


# --- accepting -----------------------------------------------------------------------------


def test_a_site_that_turned_probes_off_refuses_them(tmp_path: Path) -> None:
    site = make_site(tmp_path, allow_probe=False)
    with pytest.raises(CommandNotAllowed) as info:
        probe.accept(site, probe_request())
    assert str(info.value) == (
        "site s does not answer probes ([site] allow_probe = false in its config); ask the "
        "site admin to allow them, or test it with a real job"
    )
    assert info.value.exit_code == ExitCode.COMMAND_NOT_ALLOWED


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (probe_request(x="1"), "the probe takes no parameters"),
        (probe_request(name="other.bin"), f"the probe takes exactly one input, {PROBE_INPUT}"),
        (
            JobRequest(str(uuid.uuid4()), PROBE_COMMAND),
            f"the probe takes exactly one input, {PROBE_INPUT}",
        ),
        (
            probe_request(size=PROBE_MAX_INPUT + 1),
            f"the probe's input is limited to {PROBE_MAX_INPUT} bytes",
        ),
    ],
)
def test_a_probe_request_is_checked(tmp_path: Path, request_: JobRequest, message: str) -> None:
    with pytest.raises(InputRejected) as info:
        probe.accept(make_site(tmp_path), request_)
    assert str(info.value) == message


# --- answering -----------------------------------------------------------------------------


def staged_probe(tmp_path: Path, site: SiteConfig, data: bytes) -> AcceptedJob:
    job = probe.accept(site, probe_request(size=len(data)))
    assert job.workdir.create(site.path)
    (Path(job.workdir.path) / PROBE_INPUT).write_bytes(data)
    return job


def test_the_answer_is_a_verified_copy_and_a_report(tmp_path: Path) -> None:
    site = make_site(tmp_path, program=str(tmp_path / "missing-solver"))
    data = os.urandom(3000)
    job = staged_probe(tmp_path, site, data)
    outcome, text = probe.answer(site, job)
    assert outcome.state is JobState.COMPLETED and outcome.exit_code == 0
    workdir = Path(job.workdir.path)
    assert (workdir / PROBE_OUTPUT).read_bytes() == data
    report = ProbeReport.from_json(json.loads((workdir / PROBE_REPORT).read_text()))
    assert report.sha256 == hashlib.sha256(data).hexdigest() and report.size == 3000
    assert report.work_base == site.work_base and report.config == os.path.abspath(site.path)
    assert [(p.command, p.program, p.problem) for p in report.programs] == [
        ("solve", str(tmp_path / "missing-solver"), "does not exist")
    ]
    assert f"warning: command solve: program {tmp_path / 'missing-solver'} does not exist" in (
        text.decode()
    )
    # What goes back: the copy and the report, by the probe's own return rule.
    files, skipped = collect_job_results(job)
    assert sorted(f.name for f in files) == [PROBE_OUTPUT, PROBE_REPORT]
    assert not skipped


def test_the_answer_never_follows_a_symlinked_input(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    job = probe.accept(site, probe_request())
    job.workdir.create(site.path)
    secret = tmp_path / "secret"
    secret.write_text("site data")
    os.symlink(secret, Path(job.workdir.path) / PROBE_INPUT)
    with pytest.raises(StagingError, match="the probe cannot copy its input"):
        probe.answer(site, job)
    assert not (Path(job.workdir.path) / PROBE_OUTPUT).exists()


# --- the work dir's message --------------------------------------------------------------------


def test_a_work_dir_that_cannot_be_made_names_work_base_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "work"
    base.mkdir()
    job_id = str(uuid.uuid4())

    def refuse(path: str, mode: int = 0o777) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(SiteError) as info:
        WorkDir(str(base), job_id).create("/home/mint/site.toml")
    user = pwd.getpwuid(os.getuid()).pw_name
    assert str(info.value) == (
        f"cannot create work dir {base}/{job_id}: Permission denied (work_base = {base}); "
        f"make {base} writable by {user} or set work_base in /home/mint/site.toml"
    )


def test_a_missing_work_base_is_named_with_the_command_that_creates_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    base = blocker / "work"  # under a file: it can never be created
    with pytest.raises(SiteError) as info:
        WorkDir(str(base), str(uuid.uuid4())).create("/s.toml")
    assert f"create {base} (mkdir -p -m 700 {base}) as " in str(info.value)
    assert str(info.value).endswith("or set work_base in /s.toml")


# --- config errors, as the site entry answers them ----------------------------------------------


def test_config_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    missing = site_config_error(str(path), ConfigError("whatever"))
    assert missing.message == (
        f"site config {path} does not exist; create it, or correct --config in the forced "
        "command of MInt's key (the site account's authorized_keys)"
    )
    path.write_text("[site]\nnmae = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_site_config(str(path))
    typo = site_config_error(str(path), info.value)
    assert typo.message.startswith(
        f"site config {path}: site: unknown key 'nmae'; did you mean 'name'? allowed keys are "
    )
    assert typo.message.endswith("; fix it in that file")
    path.write_text("[site\n")
    with pytest.raises(ConfigError) as info:
        load_site_config(str(path))
    syntax = site_config_error(str(path), info.value)
    assert syntax.message.startswith(f"site config {path} is not valid TOML: ")
    assert syntax.exit_code == ExitCode.CONFIG_INVALID


def test_the_config_error_is_answered_as_an_error_frame(tmp_path: Path) -> None:
    to_site_r, to_site_w = os.pipe()
    from_site_r, from_site_w = os.pipe()
    bridge = FdChannel(from_site_r, to_site_w)
    FrameWriter(bridge).write_json({"op": "submit", "protocol": 1})
    error = SiteConfigInvalid("site config /s.toml: site: unknown key 'x'; fix it in that file")
    answer_error(error, to_site_r, from_site_w)
    reply = FrameReader(bridge).read_json()
    got = from_wire(reply["error"])
    assert type(got) is SiteConfigInvalid and got.message == error.message
    assert got.exit_code == ExitCode.CONFIG_INVALID and not got.transient
    for fd in (to_site_r, to_site_w, from_site_r, from_site_w):
        os.close(fd)
