"""Scheduler commands on a login node: the ssh command lines, the quoting of the remote
command, how ssh's failures are named, and staging a work dir there and back.

The commands run against a stand-in ``ssh`` that runs the remote command string with a real
``sh -c`` on this machine, so the quoting is checked by a real shell, not by inspection."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from bridge.core.errors import ConfigError, SchedulerError
from bridge.core.workdir_files import BATCH_SCRIPT_FILE, EXIT_CODE_FILE, NATIVE_ID_FILE
from bridge.site.config.site_config import load_site_config
from schedulers.base import JobSpec, SchedulerOptions
from schedulers.login_host import (
    LoginHost,
    classify,
    command_argv,
    master_argv,
    remote_command,
)
from schedulers.login_staging import remote_spec, stage_in, stage_out
from schedulers.slurm import SlurmScheduler

HOSTILE_WORDS = [
    "plain",
    "a b",
    "it's",
    '"double"',
    "$(touch pwned)",
    "`touch pwned2`",
    "; rm -rf /",
    "50% %j",
    "tab\there",
    "new\nline",
    "back\\slash",
    "*",
    "~root",
    "-rf",
    "",
    "ü ñ 日本",
    "&& echo hi | cat > x",
]

# A stand-in ssh: "-O check" answers as a running master would; anything else runs its last
# argument (the remote command string) with sh, as sshd's login shell would.
FAKE_SSH = """#!/bin/sh
for last; do :; done
case " $* " in *" -O "*) exit 0;; esac
echo "$*" >> "$SSH_CALLS"
exec sh -c "$last"
"""


def login(tmp_path: Path, **kw: object) -> LoginHost:
    known = tmp_path / "known_hosts"
    known.touch()
    return LoginHost(
        target="mint@login.example", known_hosts=str(known),
        control_dir=str(tmp_path / "cm"), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    calls = tmp_path / "ssh-calls"
    monkeypatch.setenv("SSH_CALLS", str(calls))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


# --- building the command line ------------------------------------------------------------------


@pytest.mark.parametrize("word", HOSTILE_WORDS)
def test_the_remote_command_parses_back_to_the_argv(word: str) -> None:
    argv = ["sbatch", "--parsable", f"/work/{word}/job.sh", word]
    assert shlex.split(remote_command(argv)) == argv


def test_the_ssh_command_line_pins_the_host_key_and_never_prompts(tmp_path: Path) -> None:
    host = login(tmp_path, port=2222, identity_file="/keys/id")
    argv = command_argv(host, ["squeue", "-h", "--name=a b"])
    assert argv[0] == "ssh"
    assert argv[-3:] == ["--", "mint@login.example", "squeue -h '--name=a b'"]
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    assert "BatchMode=yes" in options
    assert "StrictHostKeyChecking=yes" in options
    assert f"UserKnownHostsFile={host.known_hosts}" in options
    assert "ControlMaster=no" in options  # a command never becomes the background master
    assert f"ControlPath={host.control_path()}" in options
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == "/keys/id"
    assert "-F" not in argv  # the account's ~/.ssh/config is honoured


def test_the_master_persists_and_shares_one_socket_per_login_host(tmp_path: Path) -> None:
    one, other = login(tmp_path), LoginHost("mint@other", "/k", control_dir=str(tmp_path))
    assert "ControlPersist=600" in master_argv(one)
    assert {"-N", "-f", "ControlMaster=yes"} <= set(master_argv(one))
    assert one.control_path() != other.control_path()
    assert one.control_path() == login(tmp_path).control_path()
    assert len(os.path.basename(one.control_path())) == 27


# --- ssh's failures, named ----------------------------------------------------------------------


def test_an_unknown_host_key_is_named_with_the_keyscan_fix_and_not_retried(tmp_path: Path) -> None:
    host = login(tmp_path, port=2222)
    failure = classify(host, 255, "Host key verification failed.\n", "sbatch")
    assert failure is not None and not failure.transient
    assert "ssh-keyscan -p 2222 login.example" in failure.message
    assert host.known_hosts in failure.message


def test_a_changed_host_key_is_not_retried(tmp_path: Path) -> None:
    text = "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed."
    failure = classify(login(tmp_path), 255, text, "squeue")
    assert failure is not None and not failure.transient and "not pinned" in failure.message


def test_a_refused_login_names_the_authorized_keys_fix(tmp_path: Path) -> None:
    text = "mint@login.example: Permission denied (publickey)."
    failure = classify(login(tmp_path, identity_file="/keys/id"), 255, text, "sbatch")
    assert failure is not None and not failure.transient
    assert "/keys/id" in failure.message and "authorized_keys" in failure.message


def test_an_unreachable_login_host_is_transient(tmp_path: Path) -> None:
    text = "ssh: connect to host login.example port 22: Connection refused"
    failure = classify(login(tmp_path), 255, text, "squeue")
    assert failure is not None and failure.transient
    assert "cannot reach login host mint@login.example" in failure.message


def test_a_scheduler_missing_on_the_login_node_names_the_fix(tmp_path: Path) -> None:
    failure = classify(login(tmp_path), 127, "bash: line 1: sbatch: command not found", "sbatch")
    assert failure is not None and not failure.transient
    assert "sbatch is not on the PATH" in failure.message and "~/.bashrc" in failure.message


def test_the_schedulers_own_failure_is_left_to_the_adapter(tmp_path: Path) -> None:
    assert classify(login(tmp_path), 1, "sbatch: error: invalid account", "sbatch") is None


# --- through the adapter, with a real shell at the far end ----------------------------------------


def test_hostile_arguments_reach_the_remote_program_intact(
    tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    slurm = SlurmScheduler()
    slurm.configure(SchedulerOptions(retries=1, login=login(tmp_path)))
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"
    out = slurm.run(["python3", "-c", script, *HOSTILE_WORDS], "test")
    assert json.loads(out) == HOSTILE_WORDS
    assert not list(tmp_path.rglob("pwned*"))
    assert fake_ssh.read_text().count("mint@login.example") == 1


def test_a_missing_scheduler_command_fails_without_retries(tmp_path: Path, fake_ssh: Path) -> None:
    slurm = SlurmScheduler()
    slurm.configure(SchedulerOptions(retries=3, retry_wait=0.01, login=login(tmp_path)))
    with pytest.raises(SchedulerError) as caught:
        slurm._call(lambda: slurm.run(["mb-no-such-squeue", "-h"], "status"))
    assert "status: mb-no-such-squeue is not on the PATH of mint@login.example" in str(caught.value)
    assert not caught.value.transient
    assert fake_ssh.read_text().count("mb-no-such-squeue") == 1, "not retried"


# --- staging a work dir that the login node does not share ----------------------------------------


def spec_in(workdir: Path) -> JobSpec:
    control = workdir / ".mint-bridge"
    control.mkdir(parents=True)
    return JobSpec(
        job_id="job-1", workdir=str(workdir), control_dir=str(control), argv=["solve"], env={},
        stdout_path=str(control / "stdout"), stderr_path=str(control / "stderr"),
    )  # fmt: skip


def test_paths_move_to_the_jobs_dir_on_the_login_node(tmp_path: Path) -> None:
    host = login(tmp_path, shared_workdir=False, remote_root="/scratch/jobs")
    moved = remote_spec(host, spec_in(tmp_path / "w"))
    assert moved.workdir == "/scratch/jobs/job-1"
    assert moved.control_dir == "/scratch/jobs/job-1/.mint-bridge"
    assert moved.stdout_path == "/scratch/jobs/job-1/.mint-bridge/stdout"


def test_staging_copies_inputs_there_and_only_results_back(tmp_path: Path, fake_ssh: Path) -> None:
    remote_root = tmp_path / "remote root"
    host = login(tmp_path, shared_workdir=False, remote_root=str(remote_root))
    spec = spec_in(tmp_path / "work")
    data = os.urandom(300_000)
    (Path(spec.workdir) / "in.bin").write_bytes(data)
    (Path(spec.workdir) / "link-out").symlink_to("/etc/passwd")
    (Path(spec.workdir) / "link-in").symlink_to("in.bin")
    control = Path(spec.control_dir)
    (control / BATCH_SCRIPT_FILE).write_text("#!/bin/sh\n")
    (control / NATIVE_ID_FILE).write_text("41\n")
    stage_in(host, spec, timeout=30)
    there = remote_root / "job-1"
    assert (there / "in.bin").read_bytes() == data
    assert os.readlink(there / "link-in") == "in.bin"
    assert not os.path.lexists(there / "link-out"), "a symlink leading outside is never staged"
    assert (there / ".mint-bridge" / BATCH_SCRIPT_FILE).exists()
    assert not (there / ".mint-bridge" / NATIVE_ID_FILE).exists()

    (there / "result.txt").write_text("result\n")
    (there / "evil").symlink_to("/etc/shadow")
    (there / ".mint-bridge" / EXIT_CODE_FILE).write_text("3\n")
    (there / ".mint-bridge" / NATIVE_ID_FILE).write_text("666\n")  # never copied over ours
    stage_out(host, "job-1", spec.workdir, timeout=30, remove=True)
    here = Path(spec.workdir)
    assert (here / "result.txt").read_text() == "result\n"
    assert (control / EXIT_CODE_FILE).read_text() == "3\n"
    assert (control / NATIVE_ID_FILE).read_text() == "41\n"
    assert not os.path.lexists(here / "evil"), "a result leading outside is skipped"
    assert not there.exists(), "the job's dir on the login node is removed"
    stage_out(host, "job-1", spec.workdir, timeout=30, remove=True)  # again: nothing left, fine
    assert (here / "result.txt").read_text() == "result\n"


# --- the site config ----------------------------------------------------------------------------


def write_site(tmp_path: Path, scheduler: str) -> str:
    (tmp_path / "known").write_text("")
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nname = "s"\n[scheduler]\n{scheduler}\n')
    return str(path)


def test_the_login_keys_are_read(tmp_path: Path) -> None:
    config = load_site_config(write_site(tmp_path, (
        'login_host = "mint@login1"\nlogin_port = 2200\nlogin_known_hosts = "known"\n'
        'shared_workdir = false\nremote_root = "/scratch/mb/"\nlogin_persist = "5m"'
    )))  # fmt: skip
    host = config.scheduler_options.login
    assert host is not None
    assert (host.target, host.port, host.persist) == ("mint@login1", 2200, 300)
    assert host.known_hosts == str(tmp_path / "known")
    assert (host.shared_workdir, host.remote_root) == (False, "/scratch/mb")


@pytest.mark.parametrize(
    ("scheduler", "named"),
    [
        ('login_host = "mint@login1"', "login_known_hosts: is required"),
        ('login_host = "-oProxyCommand=x"\nlogin_known_hosts = "known"', "login_host"),
        ('login_host = "h"\nlogin_known_hosts = "absent"', "is not a file"),
        ('login_host = "h"\nlogin_known_hosts = "known"\nshared_workdir = false',
         "remote_root: is required"),
        ('login_host = "h"\nlogin_known_hosts = "known"\nremote_root = "/x"',
         "only used with shared_workdir = false"),
        ('login_host = "h"\nlogin_known_hosts = "known"\nlogin_port = 70000', "login_port"),
        ('shared_workdir = false', "needs login_host"),
    ],
)  # fmt: skip
def test_a_login_key_that_cannot_work_is_named(tmp_path: Path, scheduler: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_site_config(write_site(tmp_path, scheduler))
    assert named in str(caught.value)


def test_no_login_host_runs_commands_here(tmp_path: Path) -> None:
    assert load_site_config(write_site(tmp_path, "retries = 2")).scheduler_options.login is None
