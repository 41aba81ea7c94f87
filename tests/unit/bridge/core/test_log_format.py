"""JSON log lines: stable fields, the job id, and never a token (bridge.core.log_format)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from pathlib import Path

import pytest

from bridge.core.log_format import (
    JSON,
    TEXT,
    JournalFormatter,
    JsonFormatter,
    formatter,
    redact,
    under_journal,
)

JOB = "0f8fad5b-d9cb-469f-a165-70867728950e"
TOKEN = "mbt_0123456789ab_" + "S3cr3t-part_" * 4


def lines_of(fmt: logging.Formatter, emit: object) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(fmt)
    logger = logging.getLogger("tests.log_format")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        assert callable(emit)
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_a_json_line_has_the_stable_fields_and_the_job_id() -> None:
    def emit(logger: logging.Logger) -> None:
        logger.info("%s: claimed by agent %s\nsecond line", JOB, "a1")
        logger.warning("no job here")
        logger.info("explicit", extra={"job_id": JOB})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")

    first, second, third, fourth = (json.loads(line) for line in lines_of(JsonFormatter(), emit))
    assert set(first) == {"time", "level", "logger", "message", "job_id"}
    assert first["level"] == "INFO" and first["logger"] == "tests.log_format"
    assert first["job_id"] == JOB and first["message"].endswith("second line")
    assert first["time"].endswith("+00:00")
    assert "job_id" not in second and second["level"] == "WARNING"
    assert third["job_id"] == JOB
    assert "ValueError: boom" in fourth["exception"]


@pytest.mark.parametrize("kind", ["text", "json"])
def test_a_token_never_reaches_a_line(kind: str) -> None:
    def emit(logger: logging.Logger) -> None:
        logger.info("sent Authorization: Bearer %s", TOKEN)
        logger.error("bad %r", {"token": TOKEN})

    lines = lines_of(formatter(kind, "%(levelname)s %(message)s"), emit)
    assert len(lines) == 2
    for line in lines:
        assert "S3cr3t" not in line and "mbt_0123456789ab_<redacted>" in line
    assert redact("no token") == "no token"


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        formatter("yaml", "%(message)s")


def _record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("broker.api_agent", level, __file__, 1, message, None, None)


def test_under_systemd_text_lines_have_a_priority_and_no_timestamp_of_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = "04bf0396-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    with open(tmp_path / "journal", "w") as journal, open(tmp_path / "other", "w") as other:
        found = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{found.st_dev}:{found.st_ino}")
        text = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
        plain = formatter(TEXT, text, other)  # stderr redirected: the variable is inherited
        line = plain.format(_record(logging.INFO, f"{job}: claimed"))
        assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} \[INFO\] "
                            rf"broker.api_agent: {job}: claimed", line)  # fmt: skip
        journal_lines = formatter(TEXT, text, journal)
        assert isinstance(journal_lines, JournalFormatter)
        assert journal_lines.format(_record(logging.WARNING, f"{job}: lease expired")) == (
            f"<4>[WARNING] broker.api_agent: {job}: lease expired")
        assert journal_lines.format(_record(logging.INFO, "token mbt_0123456789ab_secret")) == (
            "<6>[INFO] broker.api_agent: token mbt_0123456789ab_<redacted>")
        assert isinstance(formatter(JSON, text, journal), JsonFormatter)  # JSON stays JSON
    for value in ("", "garbage", "1:x"):
        monkeypatch.setenv("JOURNAL_STREAM", value)
        assert not under_journal(sys.stderr)
