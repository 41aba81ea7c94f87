"""``audit verify`` finds the first broken line and names how it broke; ``audit show`` selects."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from bridge.core.errors import ConfigError
from bridge.site import audit_show
from bridge.site.audit_chain import AuditWriter
from bridge.site.audit_verify import verify

DAYS = [datetime.datetime(2026, 12, d, 12, 0, tzinfo=datetime.UTC) for d in (1, 2, 3)]


def make_log(directory: Path, per_day: int = 4) -> list[Path]:
    writer = AuditWriter(str(directory))
    for day in DAYS:
        for n in range(per_day):
            writer.append(
                {"event": "result_sent", "job": f"job-{n % 2}", "name": f"r{n}.txt", "size": n,
                 "sha256": f"{n:064x}", "via": "ssh", "to": "10.0.0.5:5000", "key": None},
                day + datetime.timedelta(minutes=n),
            )  # fmt: skip
    return sorted(directory.glob("audit-*.jsonl"))


def rewrite(path: Path, change: object) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(change(lines)))  # type: ignore[operator]


def test_an_intact_log_verifies_across_its_files(tmp_path: Path) -> None:
    make_log(tmp_path)
    report = verify(str(tmp_path))
    assert report.broken is None
    assert (report.files, report.lines, report.last_seq) == (3, 12, 12)


def test_an_edited_line_is_found_by_the_next_lines_prev(tmp_path: Path) -> None:
    files = make_log(tmp_path)
    rewrite(files[1], lambda ls: [ls[0], ls[1].replace(b'"size":1', b'"size":9'), *ls[2:]])
    broken = verify(str(tmp_path)).broken
    assert broken is not None
    assert (broken.path, broken.line, broken.kind) == (str(files[1]), 2, "edited")


def test_an_edited_seq_is_an_edit(tmp_path: Path) -> None:
    files = make_log(tmp_path)
    rewrite(files[0], lambda ls: [ls[0], ls[1].replace(b'"seq":2', b'"seq":7'), *ls[2:]])
    broken = verify(str(tmp_path)).broken
    assert broken is not None and (broken.line, broken.kind) == (2, "edited")


def test_a_deleted_line_is_found_where_the_chain_jumps(tmp_path: Path) -> None:
    files = make_log(tmp_path)
    rewrite(files[2], lambda ls: [ls[0], *ls[2:]])
    broken = verify(str(tmp_path)).broken
    assert broken is not None
    assert (broken.path, broken.line, broken.kind) == (str(files[2]), 2, "deleted")
    assert "seq 10" in broken.detail


def test_a_deleted_file_is_found_at_the_first_line_of_the_next(tmp_path: Path) -> None:
    files = make_log(tmp_path)
    files[1].unlink()
    broken = verify(str(tmp_path)).broken
    assert broken is not None
    assert (broken.path, broken.line, broken.kind) == (str(files[2]), 1, "deleted")
    assert "4 line(s)" in broken.detail


def test_a_file_cut_inside_a_line_or_to_nothing_is_truncated(tmp_path: Path) -> None:
    files = make_log(tmp_path)
    files[0].write_bytes(files[0].read_bytes()[:-30])
    broken = verify(str(tmp_path)).broken
    assert broken is not None
    assert (broken.path, broken.line, broken.kind) == (str(files[0]), 4, "truncated")
    files[0].write_bytes(b"")
    broken = verify(str(tmp_path)).broken
    assert broken is not None and (broken.path, broken.kind) == (str(files[0]), "truncated")


def test_swapped_lines_are_reordered(tmp_path: Path) -> None:
    files = make_log(tmp_path)
    rewrite(files[1], lambda ls: [ls[0], ls[2], ls[1], ls[3]])
    broken = verify(str(tmp_path)).broken
    assert broken is not None
    assert (broken.path, broken.line, broken.kind) == (str(files[1]), 2, "reordered")


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    files = make_log(tmp_path)
    rewrite(files[0], lambda ls: [ls[0], b"hello\n", *ls[1:]])
    broken = verify(str(tmp_path)).broken
    assert broken is not None and (broken.line, broken.kind) == (2, "not an entry")


def test_show_selects_by_job_and_since_and_renders_table_and_json(tmp_path: Path) -> None:
    make_log(tmp_path)
    since = audit_show.parse_since("2026-12-02")
    chosen = audit_show.select(str(tmp_path), job="job-1", since=since)
    assert [(e["ts"][:10], e["name"]) for e in chosen.entries] == [
        ("2026-12-02", "r1.txt"), ("2026-12-02", "r3.txt"),
        ("2026-12-03", "r1.txt"), ("2026-12-03", "r3.txt"),
    ]  # fmt: skip
    table = audit_show.as_table(chosen.entries).splitlines()
    assert table[0].split() == ["TIME", "(UTC)", "JOB", "EVENT", "FILE", "SIZE", "SHA-256",
                                "TO", "/", "RULE"]  # fmt: skip
    assert table[1].split() == [
        "2026-12-02", "12:01:00", "job-1", "sent", "r1.txt", "1", f"{1:064x}", "ssh",
        "10.0.0.5:5000",
    ]  # fmt: skip
    assert json.loads(audit_show.as_json(chosen.entries)) == chosen.entries
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        audit_show.parse_since("last tuesday")
