"""The original API's pure parts: ini import, [legacy] config, names, mimetypes, messages and
the progress/status a workflow client sees for each state of a job."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.core.errors import ConfigError
from broker.cli import cli
from broker.config import load_config
from broker.legacy.calc_info import encoded_size, parse_calc_info
from broker.legacy.config import LegacyConfig
from broker.legacy.ini import read_ini, render_toml
from broker.legacy.jobs import offer_problem, progress, status
from broker.legacy.replies import (
    STDERR_NAME,
    STDOUT_NAME,
    Progress,
    Refused,
    Status,
    guess_mimetype,
    missing_entry,
    no_job,
    ok,
    refusal,
    status_message,
    std_file,
    strip_std_file,
)
from broker.store import (
    InputRecord,
    InputSpec,
    JobRecord,
    LegacyRecord,
    NewJob,
    ResultRecord,
    State,
)

ORIGINAL_INI = """\
[Server]
ipaddress = 192.168.10.242
portnumber = 8082

[RemoteSites]
remote_site_ids = nims-dev
               u-tokyo327
               rme-u-tokyo
               uacj
[nims-dev]
commands = /opt/Abaqus/Commands/abaqus
        /opt/fem-ccv/femccv
[u-tokyo327]
commands = /opt/Abaqus/Commands/abaqus
        /opt/fem-ccv/femccv%%
[rme-u-tokyo]
commands = create_inp_file.sh
[unlisted]
commands = /bin/sh
"""


# --- ini import ---------------------------------------------------------------------------------


def test_the_original_ini_becomes_the_whitelist_and_server_settings(tmp_path: Path) -> None:
    ini = tmp_path / "mi_distributed_computing_assist.ini"
    ini.write_text(ORIGINAL_INI)
    imported = read_ini(str(ini))
    assert (imported.host, imported.port) == ("192.168.10.242", 8082)
    assert imported.sites == {
        "nims-dev": ["/opt/Abaqus/Commands/abaqus", "/opt/fem-ccv/femccv"],
        "u-tokyo327": ["/opt/Abaqus/Commands/abaqus", "/opt/fem-ccv/femccv%%"],  # literal
        "rme-u-tokyo": ["create_inp_file.sh"],
        "uacj": [],  # listed without a section: no command
    }
    warnings = "\n".join(imported.warnings)
    assert "append :50443" in warnings and "[unlisted]" in warnings and "site uacj" in warnings
    config_path = tmp_path / "broker.toml"
    config_path.write_text(render_toml(imported, data_dir="state", cert="tls/b.crt",
                                       key="tls/b.key", source=ini.name))  # fmt: skip
    config = load_config(str(config_path))
    assert (config.host, config.port, config.tls) == ("192.168.10.242", 8082, True)
    assert config.cert == str(tmp_path / "tls/b.crt")
    assert config.data_dir == str(tmp_path / "state")
    assert config.legacy.enabled and config.legacy.max_body == 64 << 20
    assert dict(config.legacy.sites) == {k: tuple(v) for k, v in imported.sites.items()}
    assert config.legacy.allows("nims-dev", "/opt/fem-ccv/femccv")
    assert not config.legacy.allows("nims-dev", "/opt/fem-ccv/femccv ")
    assert not config.legacy.allows("unlisted", "/bin/sh")


def test_import_ini_command_writes_a_config_that_loads(tmp_path: Path) -> None:
    ini = tmp_path / "orig.ini"
    ini.write_text(ORIGINAL_INI.replace("portnumber = 8082", "portnumber = 50443"))
    out = tmp_path / "broker.toml"
    runner = CliRunner()
    done = runner.invoke(cli, ["import-ini", str(ini), "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert load_config(str(out)).port == 50443
    again = runner.invoke(cli, ["import-ini", str(ini), "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    printed = runner.invoke(cli, ["import-ini", str(ini)])
    assert printed.exit_code == 0 and '"rme-u-tokyo" = ["create_inp_file.sh"]' in printed.output


@pytest.mark.parametrize("text, message", [
    ("[RemoteSites]\nremote_site_ids = bad/site\n", "cannot be a site token's name"),
    ("[Server]\nportnumber = http\n", "is not a number"),
    ("[Server]\nportnumber = 70000\n", "is not a TCP port"),
    ("not an ini\n", "is not a valid ini file"),
])  # fmt: skip
def test_ini_problems_name_the_file_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    ini = tmp_path / "x.ini"
    ini.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_ini(str(ini))


# --- [legacy] in broker.toml ----------------------------------------------------------------------


def write_config(tmp_path: Path, legacy: str) -> str:
    path = tmp_path / "broker.toml"
    path.write_text(f'[server]\nhost = "127.0.0.1"\ntls = false\n[storage]\ndata_dir = "d"\n'
                    f"{legacy}")  # fmt: skip
    return str(path)


def test_the_legacy_api_is_off_by_default(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ""))
    assert config.legacy == LegacyConfig()
    assert not config.legacy.enabled and not config.legacy.knows("any")


def test_legacy_settings_are_read_with_units(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, """
[legacy]
enabled = true
max_body = "8MiB"
lease_ttl = "2m"
[legacy.sites]
"site-a" = ["run.sh", "/opt/x y/run"]
"""))
    legacy = config.legacy
    assert (legacy.enabled, legacy.max_body, legacy.lease_ttl) == (True, 8 << 20, 120.0)
    assert legacy.allows("site-a", "/opt/x y/run") and not legacy.allows("site-a", "run")


@pytest.mark.parametrize("legacy, message", [
    ('[legacy]\nenable = true\n', "legacy: unknown key 'enable'"),
    ('[legacy.sites]\n"a/b" = []\n', "legacy.sites.a/b: site ids use"),
    ('[legacy.sites]\na = "run.sh"\n', "must be a list"),
    ('[legacy.sites]\na = ["run.sh\\n"]\n', "control characters"),
    ('[legacy.sites]\na = [" run.sh"]\n', "white space"),
    ('[legacy.sites]\na = [""]\n', "non-empty string"),
    ('[legacy]\nmax_body = "1"\n', "at least 1KiB"),
])  # fmt: skip
def test_legacy_config_errors_name_the_key(tmp_path: Path, legacy: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write_config(tmp_path, legacy))


# --- messages -----------------------------------------------------------------------------------


def test_replies_are_wrapped_in_errors_and_only_the_integer_200_is_ok() -> None:
    assert ok("job", accept_id="x") == {"errors": [{"code": 200, "message": "job",
                                                    "accept_id": "x"}]}  # fmt: skip
    assert no_job() == {"errors": [{"code": "0300", "message": "no job"}]}
    assert refusal(403, "no") == {"errors": [{"code": 403, "message": "no"}]}
    with pytest.raises(AssertionError):
        refusal(200, "a refusal may never say OK")
    with pytest.raises(AssertionError):
        Refused(409, 200, "nor this")


def test_status_messages_carry_the_prefix_and_one_colon() -> None:
    for value in [*Progress, *Status]:
        message = status_message(value.value)
        assert message == f"status:{value.value}"
        assert message.split(":")[1] == value.value  # what the workflow client keeps
    with pytest.raises(ValueError):
        status_message("a:b")


# --- calc-info --------------------------------------------------------------------------------


def calc_info(**changes: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "command": "/opt/x/run.sh", "remote-site": "site-a", "parameters": "p1 p2",
        "parameter_files": {"in.dat": ["aGkK", "text/plain;", "charset=us-ascii"],
                            "raw.bin": ["AAH/", "weird/type;;", " charset = x "],
                            "empty.dat": ["", "", ""]},
        "result_files": {"out.dat": {"content": "", "mimetype1": "", "mimetype2": ""},
                         "sub/r.csv": {"content": "", "mimetype1": "", "mimetype2": ""},
                         "": {"content": "", "mimetype1": "", "mimetype2": ""}},
    }  # fmt: skip
    info.update(changes)
    return {"calc-info": info}


def test_calc_info_keeps_mimetypes_and_parameters_exactly() -> None:
    parsed = parse_calc_info(calc_info())
    assert [(i.name, i.data) for i in parsed.inputs] == [
        ("in.dat", b"hi\n"), ("raw.bin", b"\x00\x01\xff"), ("empty.dat", b"")]
    stored = parsed.stored()
    assert stored["parameter_files"] == {"in.dat": ["text/plain;", "charset=us-ascii"],
                                         "raw.bin": ["weird/type;;", " charset = x "],
                                         "empty.dat": ["", ""]}  # fmt: skip
    assert stored["parameters"] == "p1 p2" and stored["command"] == "/opt/x/run.sh"
    assert list(stored["result_files"]) == ["out.dat", "sub/r.csv", ""]


@pytest.mark.parametrize("changes, message", [
    ({"parameter_files": {"dir/in.dat": ["", "", ""]}}, "path separator"),
    ({"parameter_files": {"..": ["", "", ""]}}, "names a directory"),
    ({"parameter_files": {"-rf": ["", "", ""]}}, "starts with '-'"),
    ({"parameter_files": {"a\x00b": ["", "", ""]}}, "NUL"),
    ({"parameter_files": {"in.dat": ["not base64!", "", ""]}}, "not valid base64"),
    ({"parameter_files": {"in.dat": ["", ""]}}, "must be [base64, mimetype, charset]"),
    ({"result_files": {"../up": {}}}, "names a directory"),
    ({"result_files": {"/etc/passwd": {}}}, "not a plain relative path"),
    ({"result_files": {"a//b": {}}}, "not a plain relative path"),
    ({"result_files": {"x\ny": {}}}, "control character"),
    ({"result_files": {"out.dat": ""}}, "must be an object"),
    ({"result_files": {"in.dat;id": {}}}, "hand result names to a shell"),
    ({"result_files": {"a b.txt": {}}}, "hand result names to a shell"),
    ({"result_files": {"$(id).txt": {}}}, "hand result names to a shell"),
    ({"result_files": {"~/x": {}}}, "hand result names to a shell"),
    ({"result_files": {"*.dat": {}}}, "hand result names to a shell"),
    ({"result_files": {"sub/-x": {}}}, "starts with '-'"),
    ({"command": ""}, "command must be a non-empty string"),
    ({"parameters": ["p"]}, "parameters must be a string"),
    ({"extra": 1}, "unknown key 'extra'"),
])  # fmt: skip
def test_unsafe_or_malformed_calc_info_is_refused_with_202(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(Refused) as caught:
        parse_calc_info(calc_info(**changes))
    assert (caught.value.http, caught.value.code) == (202, 400)
    assert message in caught.value.message


def test_a_body_without_calc_info_is_refused() -> None:
    with pytest.raises(Refused) as caught:
        parse_calc_info({"calc_info": {}})
    assert caught.value.http == 202 and caught.value.code == 400


# --- files the broker describes ---------------------------------------------------------------


@pytest.mark.parametrize("data, types", [
    (b"", ("inode/x-empty;", "charset=binary")),
    (b"plain text\n\ttab\r\n", ("text/plain;", "charset=us-ascii")),
    ("計算\n".encode(), ("text/plain;", "charset=utf-8")),
    (b"\x00\x01binary", ("application/octet-stream;", "charset=binary")),
    (b"\xff\xfe", ("application/octet-stream;", "charset=binary")),
])  # fmt: skip
def test_guessed_mimetypes_have_the_form_of_file_dash_i(
    data: bytes, types: tuple[str, str]
) -> None:
    assert guess_mimetype(data) == types


def test_log_files_are_the_log_plus_two_newlines_as_the_original_wrote_them() -> None:
    assert std_file(b"out\n") == b"out\n\n\n"
    assert std_file(b"") == b"\n\n"
    assert std_file(b"err\n", "job failed: code 3") == b"err\n\n\nmint-bridge: job failed: code 3\n"
    assert strip_std_file(b"out\n\n\n") == b"out\n"
    assert strip_std_file(b"no suffix") == b"no suffix"
    assert missing_entry("o.dat") == {"content": "", "mimetype1": "Error",
                                      "mimetype2": "出力指定ファイル(o.dat)がありませんでした。"}


# --- progress and status from the job's state --------------------------------------------------


def job(state: State, **changes: Any) -> JobRecord:
    spec = NewJob(job_id=str(uuid.uuid4()), client="wf", site="site-a", command="run.sh",
                   inputs=(InputSpec("in.dat", 3, "0" * 64),),
                   params=changes.pop("params", {}), metadata=changes.pop("metadata", {}))
    inputs = tuple(InputRecord(i.name, i.size, i.sha256, i.mode, i.size) for i in spec.inputs)
    return JobRecord(spec=spec, state=state, version=1, inputs=inputs, **changes)


def record(job_id: str, **changes: Any) -> LegacyRecord:
    info: dict[str, Any] = {"result_files": {"out.dat": {}, STDOUT_NAME: {}, STDERR_NAME: {}}}
    return LegacyRecord(job_id, info, **changes)


def test_progress_and_status_follow_the_store_state() -> None:
    for state in (State.CREATED, State.QUEUED):
        created = job(state)
        assert (progress(created, None), status(created, None)) == ("not start", "none")
    # A new agent's job: claimed is fetching inputs, running is running.
    claimed = job(State.CLAIMED, agent_id="agent-1", lease_epoch=1)
    assert progress(claimed, record(claimed.job_id)) == "sending params"
    assert progress(job(State.RUNNING, agent_id="agent-1"), None) == "running"
    # An original poller's job: its own steps, while it holds the lease it took.
    held = job(State.RUNNING, agent_id="legacy:abc", lease_epoch=2)
    mine = record(held.job_id, progress="calc end", status="abnormal", poller="legacy:abc",
                  epoch=2)  # fmt: skip
    assert (progress(held, mine), status(held, mine)) == ("calc end", "abnormal")
    stale = record(held.job_id, progress="calc end", status="abnormal", poller="legacy:abc",
                   epoch=1)  # fmt: skip
    assert (progress(held, stale), status(held, stale)) == ("running", "none")


def result(name: str) -> ResultRecord:
    return ResultRecord(name, 1, "0" * 64, 1, listed=True)


def test_a_final_job_is_completed_only_with_a_declared_result() -> None:
    done = {"state": "completed", "exit_code": 0}
    ok_job = job(State.FINISHED, outcome=done, results=(result("out.dat"),))
    assert (progress(ok_job, record(ok_job.job_id)), status(ok_job, record(ok_job.job_id))) \
        == ("got return", "completed")
    # The original poller's rule: nothing declared came back -> abnormal, whatever the code.
    only_logs = job(State.FINISHED, outcome=done, results=(result(STDOUT_NAME),))
    assert status(only_logs, record(only_logs.job_id)) == "abnormal"
    for state, outcome in ((State.FINISHED, {"state": "failed", "exit_code": 3}),
                           (State.CANCELLED, {"state": "cancelled"}),
                           (State.EXPIRED, {"state": "lost"}),
                           (State.FINISHED, {"state": "rejected"})):  # fmt: skip
        ended = job(state, outcome=outcome, results=(result("out.dat"),))
        assert (progress(ended, None), status(ended, record(ended.job_id))) \
            == ("got return", "abnormal")


def test_only_whitelisted_parameterless_jobs_that_fit_go_to_original_pollers() -> None:
    config = LegacyConfig(enabled=True, max_body=8, sites={"site-a": ("run.sh",)})
    small = job(State.QUEUED)  # 3 bytes of input: 4 as base64
    assert offer_problem(small, None, config) is None
    assert "not whitelisted" in str(offer_problem(_with(small, command="run.sh "), None, config))
    assert "parameters" in str(offer_problem(job(State.QUEUED, params={"n": 1}), None, config))
    # A legacy job carries its parameters as a string: not a reason to hold it back.
    assert offer_problem(job(State.QUEUED, params={}), record(small.job_id), config) is None
    big = replace(small, inputs=(InputRecord("in.dat", 7, "0" * 64, 0o644, 7),))
    assert "max_body" in str(offer_problem(big, None, config))
    for names in ("ok.dat:../x", "ok.dat:x`id`"):
        bad = job(State.QUEUED, metadata={"legacy_result_files": names})
        assert "legacy_result_files" in str(offer_problem(bad, None, config))


def _with(record_: JobRecord, **spec_changes: Any) -> JobRecord:
    return replace(record_, spec=replace(record_.spec, **spec_changes))


def test_encoded_sizes_match_base64() -> None:
    for size in range(0, 10):
        assert encoded_size(size) == len(base64.b64encode(b"x" * size))
