"""Progress lines for logs: start, each quarter, end; nothing for small files."""

from __future__ import annotations

import io

from bridge.client.progress_view import LineProgress, human_bytes
from bridge.core import progress

MIB = 1 << 20


def lines_for(size: int, steps: int) -> list[str]:
    out = io.StringIO()
    watcher = LineProgress("JOB", out, interval=3600)
    with progress.watching(watcher), progress.transfer("out", "r.dat", size):
        for _ in range(steps):
            progress.moved(size // steps)
    return out.getvalue().splitlines()


def test_a_big_file_gets_a_line_at_start_each_quarter_and_end() -> None:
    lines = lines_for(64 * MIB, 64)
    assert lines[0] == "mint-bridge: JOB: receiving r.dat (64.0 MiB)"
    middle = [line for line in lines[1:-1]]
    assert [line.split("(")[1].split(")")[0] for line in middle] == ["25%", "50%", "75%"]
    assert all(line.startswith("mint-bridge: JOB: receiving r.dat: ") for line in middle)
    assert lines[-1].startswith("mint-bridge: JOB: received r.dat: 64.0 MiB in ")


def test_a_small_file_gets_no_line() -> None:
    assert lines_for(MIB, 4) == []


def test_sizes_read_as_people_write_them() -> None:
    assert [human_bytes(n) for n in (5, 1536, 16 * MIB, 3 << 30)] == [
        "5 B", "1.5 KiB", "16.0 MiB", "3.0 GiB",
    ]  # fmt: skip
