"""The egress policy as tables: metadata rules, content scan, config keys, the private index,
and a withdrawn file on the wire."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from bridge.core import defaults
from bridge.core.errors import ConfigError, ResultNotSent
from bridge.core.results import ResultFile
from bridge.core.staging import FileHeader, receive_file, send_file
from bridge.site import private_index
from bridge.site.config import load_site_config
from bridge.site.egress import EgressPolicy, check_metadata
from bridge.site.egress_scan import inspect
from tests.support.frames import pipe


def result(name: str, size: int) -> ResultFile:
    return ResultFile(name, name, size, 0o644)


FILES = [result("a.csv", 10), result("b.log", 20), result("sub/c.inp", 30), result("d.dat", 40)]


@pytest.mark.parametrize(
    ("policy", "passed", "withheld"),
    [
        (EgressPolicy(), ["a.csv", "b.log", "sub/c.inp", "d.dat"], {}),
        (EgressPolicy(deny=("*.inp",)), ["a.csv", "b.log", "d.dat"], {"sub/c.inp": "deny"}),
        (EgressPolicy(deny=("sub/*",)), ["a.csv", "b.log", "d.dat"], {"sub/c.inp": "deny"}),
        (
            EgressPolicy(allow=("*.csv", "*.dat")),
            ["a.csv", "d.dat"],
            {"b.log": "allow", "sub/c.inp": "allow"},
        ),
        # deny wins over allow
        (EgressPolicy(allow=("*",), deny=("b.*",)), ["a.csv", "sub/c.inp", "d.dat"],
         {"b.log": "deny"}),
        (EgressPolicy(max_file_size=25), ["a.csv", "b.log"],
         {"sub/c.inp": "max_file_size", "d.dat": "max_file_size"}),
        (EgressPolicy(max_file_size=10), ["a.csv"],
         {"b.log": "max_file_size", "sub/c.inp": "max_file_size", "d.dat": "max_file_size"}),
        (EgressPolicy(max_files=2), ["a.csv", "b.log"],
         {"sub/c.inp": "max_files", "d.dat": "max_files"}),
        (EgressPolicy(max_files=0), [],
         {n.name: "max_files" for n in FILES}),
        # a file too big for what is left is withheld; a later smaller one still fits
        (EgressPolicy(max_job_size=45), ["a.csv", "b.log"],
         {"sub/c.inp": "max_job_size", "d.dat": "max_job_size"}),
        (EgressPolicy(max_job_size=60), ["a.csv", "b.log", "sub/c.inp"], {"d.dat": "max_job_size"}),
        (EgressPolicy(max_job_size=50, deny=("a.csv",)), ["b.log", "sub/c.inp"],
         {"a.csv": "deny", "d.dat": "max_job_size"}),
        # a withheld file counts towards neither limit
        (EgressPolicy(max_files=2, max_file_size=15), ["a.csv"],
         {"b.log": "max_file_size", "sub/c.inp": "max_file_size", "d.dat": "max_file_size"}),
    ],
)  # fmt: skip
def test_metadata_rules(policy: EgressPolicy, passed: list[str], withheld: dict[str, str]) -> None:
    selection = check_metadata(policy, FILES)
    assert [f.name for f in selection.passed] == passed
    assert {w.name: w.rule for w in selection.withheld} == withheld


def test_a_withheld_required_result_is_marked_and_the_wire_entry_names_the_rule() -> None:
    policy = EgressPolicy(max_file_size=15, required=frozenset({"d.dat"}))
    entries = [w.to_wire() for w in check_metadata(policy, FILES).withheld]
    assert entries[-1] == {
        "name": "d.dat",
        "reason": "withheld by the site's egress policy (max_file_size): 40 bytes, over the "
        "limit of 15 (not read)",
        "rule": "max_file_size",
        "required": True,
    }
    assert "required" not in entries[0]


def test_the_default_caps() -> None:
    policy = EgressPolicy()
    assert (policy.max_file_size, policy.max_job_size, policy.max_files) == (
        64 << 30, 256 << 30, 10_000,
    )  # fmt: skip
    huge = check_metadata(policy, [result("sparse.bin", 1 << 40)])
    assert [w.rule for w in huge.withheld] == ["max_file_size"]


# --- content: one pass that hashes and finds markers ---------------------------------------

CHUNK = defaults.CHUNK_SIZE


@pytest.mark.parametrize(
    ("data", "markers", "found"),
    [
        (b"plain results\n", (b"SECRET",), None),
        (b"plain SECRET results", (b"SECRET",), b"SECRET"),
        (b"x" * (CHUNK - 3) + b"SECRET" + b"y" * 10, (b"SECRET",), b"SECRET"),  # across a seam
        (b"x" * (CHUNK - 1) + b"SECRET", (b"SECRET",), b"SECRET"),
        (b"x" * CHUNK + b"SECRET", (b"SECRET",), b"SECRET"),  # at the start of a chunk
        (b"x" * (2 * CHUNK - 2) + b"AB" + b"CD", (b"NOPE", b"ABCD"), b"ABCD"),
        (b"x" * (CHUNK - 3) + b"SECRE" + b"y", (b"SECRET",), None),  # a seam without it
        (b"", (b"SECRET",), None),
        (b"SECRET", (), None),
    ],
)
def test_markers_are_found_in_the_hashing_pass(
    data: bytes, markers: tuple[bytes, ...], found: bytes | None
) -> None:
    source = io.BytesIO(data)
    got = inspect(source, len(data), markers, "r")
    assert got.marker == found
    assert got.sha256 == (None if found else hashlib.sha256(data).hexdigest())
    assert source.tell() == 0  # left at the start for the sender


def test_a_file_that_shrank_before_the_scan_fails_that_file() -> None:
    with pytest.raises(Exception, match="shrank while it was being read"):
        inspect(io.BytesIO(b"abc"), 10, (b"SECRET",), "r")


# --- config: keys, did-you-mean, overrides -------------------------------------------------

BASE = """
[site]
name = "s"
work_base = "/tmp"

[commands.solve]
program = "/bin/true"
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "site.toml"
    path.write_text(BASE + text)
    return load_site_config(str(path))


def test_site_policy_with_command_overrides(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    config = load(tmp_path, f"""
[commands.solve.egress]
max_files = 3
deny = ["*.tmp"]
required = ["out.csv"]

[egress]
max_file_size = "1MiB"
max_job_size = "2MiB"
allow = ["*.csv", "*.tmp"]
deny_markers = ["CONFIDENTIAL"]
deny_private = true
private_dirs = ["{private}"]
private_index = "{tmp_path}/index.json"
""")  # fmt: skip
    assert hasattr(config, "egress_for")
    policy = config.egress_for(config.commands["solve"])  # type: ignore[attr-defined]
    assert policy == EgressPolicy(
        max_file_size=1 << 20, max_job_size=2 << 20, max_files=3, allow=("*.csv", "*.tmp"),
        deny=("*.tmp",), deny_markers=(b"CONFIDENTIAL",), deny_private=True,
        private_dirs=(str(private),), private_index=f"{tmp_path}/index.json",
        required=frozenset({"out.csv"}),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[egress]\nmax_file_sise = 1\n",
         "egress: unknown key 'max_file_sise'; did you mean 'max_file_size'?"),
        ("[commands.solve.egress]\nrequire = ['a']\n",
         "commands.solve.egress: unknown key 'require'; did you mean 'required'?"),
        ("[commands.solve.egress]\nprivate_dirs = ['/x']\n",
         "commands.solve.egress.private_dirs: is set for the whole site: move it to [egress]"),
        ("[egress]\nmax_file_size = '10 parsecs'\n", "egress.max_file_size: '10 parsecs' is not"),
        ("[egress]\nmax_files = -1\n", "egress.max_files: must be 0 or more"),
        ("[egress]\ndeny = ['']\n", "egress.deny: an empty pattern matches nothing"),
        ("[egress]\nallow = '*.csv'\n", "egress.allow: must be a list of strings"),
        ("[egress]\ndeny_markers = ['ab']\n", "egress.deny_markers: each marker must be 4 to"),
        ("[egress]\ndeny_private = 'yes'\n", "egress.deny_private: must be a bool"),
        ("[egress]\nprivate_dirs = ['rel/dir']\n",
         "egress.private_dirs: 'rel/dir' must be an absolute path"),
        ("[egress]\ndeny_private = true\n",
         "egress.private_dirs: [egress] sets deny_private = true but [egress] has no "
         "private_dirs; add e.g. private_dirs = "),
        ("[commands.solve.egress]\ndeny_private = true\n",
         "egress.private_dirs: [commands.solve.egress] sets deny_private = true"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key_and_the_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert str(info.value).startswith(f"{tmp_path / 'site.toml'}: {message}"), str(info.value)


# --- the private index: size, mtime and inode; only changed files are rehashed --------------


def test_the_index_rehashes_only_what_changed(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "sub").mkdir(parents=True)
    (private / "a.inp").write_bytes(b"model A")
    (private / "sub" / "b.inp").write_bytes(b"model B")
    (private / "empty").write_bytes(b"")
    os.symlink("/etc/passwd", private / "link")
    index = str(tmp_path / "state" / "index.json")

    first = private_index.refresh((str(private),), index)
    assert (first.hashed, first.kept, first.removed) == (2, 0, 0)
    assert first.index.hashes == {hashlib.sha256(b"model A").hexdigest(),
                                  hashlib.sha256(b"model B").hexdigest()}  # fmt: skip

    again = private_index.refresh((str(private),), index)
    assert (again.hashed, again.kept, again.removed) == (0, 2, 0)

    (private / "a.inp").write_bytes(b"model A, revised")
    (private / "sub" / "b.inp").unlink()
    (private / "c.inp").write_bytes(b"model C")
    changed = private_index.refresh((str(private),), index)
    assert (changed.hashed, changed.kept, changed.removed) == (2, 0, 1)
    assert private_index.load(index).hashes == {
        hashlib.sha256(b"model A, revised").hexdigest(), hashlib.sha256(b"model C").hexdigest(),
    }  # fmt: skip
    assert oct(os.stat(index).st_mode & 0o777) == "0o600"


def test_a_replaced_file_of_the_same_size_and_mtime_is_rehashed_by_its_inode(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir()
    model = private / "m.inp"
    model.write_bytes(b"AAAA")
    index = str(tmp_path / "index.json")
    private_index.refresh((str(private),), index)
    st = model.stat()
    spare = private / ".spare"
    spare.write_bytes(b"BBBB")
    os.utime(spare, ns=(st.st_atime_ns, st.st_mtime_ns))
    keep = tmp_path / "old-inode"  # keep the old inode alive so the number is not reused
    os.link(model, keep)
    os.replace(spare, model)
    done = private_index.refresh((str(private),), index)
    assert done.hashed == 1
    assert hashlib.sha256(b"BBBB").hexdigest() in done.index.hashes
    assert hashlib.sha256(b"AAAA").hexdigest() not in done.index.hashes


# --- a file that cannot be read to its end is withdrawn, and the stream goes on -------------


class _Failing(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= 5:
            raise OSError(5, "Input/output error")
        return super().read(min(size or 5, 5))


def test_a_file_withdrawn_mid_stream_is_dropped_and_the_next_arrives(tmp_path: Path) -> None:
    writer, reader, _ = pipe()
    with pytest.raises(ResultNotSent, match="cannot be read: Input/output error"):
        send_file(writer, "bad.bin", _Failing(b"0123456789"), 10, 0o644)
    send_file(writer, "good.txt", io.BytesIO(b"fine"), 4, 0o644)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ResultNotSent, match=r"not sent: bad\.bin cannot be read"):
            receive_file(reader, FileHeader.from_message(reader.read_json()), fd, "bad.bin")
        receive_file(reader, FileHeader.from_message(reader.read_json()), fd, "good.txt")
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["good.txt"]  # nothing of bad.bin is left
    assert (tmp_path / "good.txt").read_bytes() == b"fine"


def test_a_known_digest_is_sent_as_it_is_and_a_changed_file_is_withdrawn(
    tmp_path: Path,
) -> None:
    writer, reader, _ = pipe()
    digest = hashlib.sha256(b"data").hexdigest()
    assert send_file(writer, "f", io.BytesIO(b"data"), 4, 0o644, sha256=digest) == digest
    with pytest.raises(ResultNotSent, match="g changed after it was checked"):
        send_file(writer, "g", io.BytesIO(b"data"), 4, 0o644, sha256=digest,
                  unchanged=lambda: False)  # fmt: skip
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert receive_file(reader, FileHeader.from_message(reader.read_json()), fd, "f") == digest
        with pytest.raises(ResultNotSent, match="not sent: g changed after it was checked"):
            receive_file(reader, FileHeader.from_message(reader.read_json()), fd, "g")
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_site_index_private_reports_what_it_read(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bridge.cli import main

    private = tmp_path / "private"
    private.mkdir()
    (private / "m.inp").write_bytes(b"model")
    config = tmp_path / "site.toml"
    config.write_text(BASE + f'[egress]\nprivate_dirs = ["{private}"]\n'
                      f'private_index = "{tmp_path}/i.json"\n')  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(main, ["site", "index-private", "--config", str(config)])
    assert (first.exit_code, first.output) == (
        0, f"1 private file(s) indexed in {tmp_path}/i.json: 1 hashed, 0 unchanged, 0 removed\n"
    )  # fmt: skip
    again = runner.invoke(main, ["site", "index-private", "--config", str(config)])
    assert "0 hashed, 1 unchanged, 0 removed" in again.output

    config.write_text(BASE)
    none = runner.invoke(main, ["site", "index-private", "--config", str(config)])
    assert none.exit_code == 78
    assert "[egress] has no private_dirs; add e.g. private_dirs = " in none.output
