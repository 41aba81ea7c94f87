"""Durations and sizes as people write them in config files."""

from __future__ import annotations

import math

import pytest

from bridge.core.units import parse_duration, parse_size

DURATION_HELP = "is not a duration; use seconds or a number with s/m/h/d/w, e.g. '30m'"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (0, 0.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1.5h", 5400.0),
        ("0.5m", 30.0),
        (" 2 h ", 7200.0),
        ("10 s", 10.0),
        ("01:30:00", 5400.0),
        ("0:00:05", 5.0),
        ("100:00:00", 360000.0),
        ("1:2:3", 3723.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    result = parse_duration(value)
    assert result == seconds
    assert type(result) is float


@pytest.mark.parametrize(
    "text", ["", "soon", "2x", "2H", "-5", "-5s", "1e3", "1:30", "1:2:3:4", "h", "5 5", "2hours"]
)
def test_parse_duration_rejects_text(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == f"{text!r} {DURATION_HELP}"


@pytest.mark.parametrize("text", ["1:60:00", "0:00:60", "1:99:99"])
def test_parse_duration_rejects_out_of_range_clock_fields(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == f"{text!r}: minutes and seconds must be below 60"


@pytest.mark.parametrize("value", [-1, -0.5])
def test_parse_duration_rejects_negative_numbers(value: float) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == "a duration cannot be negative"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "a duration must be a finite number"),
        (math.inf, "a duration must be a finite number"),
        (-math.inf, "a duration cannot be negative"),
    ],
)
def test_parse_duration_rejects_non_finite_numbers(value: float, message: str) -> None:
    # TOML has nan and inf literals; a NaN walltime would disable the limit silently.
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_booleans(value: bool) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == "expected a duration such as 90, '30m', '2h', '7d' or '01:30:00'"


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1048576, 1048576),
        ("7", 7),
        ("7B", 7),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("1.5KiB", 1536),
        ("512MiB", 512 << 20),
        ("10GB", 10 * 1000**3),
        ("10GiB", 10 << 30),
        ("2TB", 2 * 1000**4),
        ("1TiB", 1 << 40),
        ("10 kb", 10000),
        ("3 mib", 3 << 20),
        (" 4gib ", 4 << 30),
    ],
)
def test_parse_size_accepts(value: object, size: int) -> None:
    result = parse_size(value)
    assert result == size
    assert type(result) is int


@pytest.mark.parametrize("text", ["", "lots", "-5MB", "5 PB", "1e3", "MiB", "5 M", "1,000"])
def test_parse_size_rejects_text(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert str(info.value) == f"{text!r} is not a size; use bytes or e.g. '512MiB', '10GB'"


def test_parse_size_rejects_negative_and_booleans() -> None:
    with pytest.raises(ValueError) as info:
        parse_size(-1)
    assert str(info.value) == "a size cannot be negative"
    with pytest.raises(ValueError) as info:
        parse_size(True)
    assert str(info.value) == "expected a size such as 1048576 or '10GiB'"


@pytest.mark.parametrize("value", [math.nan, math.inf, -2.5])
def test_parse_size_rejects_non_finite_and_negative_floats(value: float) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(value)
