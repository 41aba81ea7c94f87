"""The probe's shared names and report, and the did-you-mean of config key checks."""

from __future__ import annotations

import pytest

from bridge.core.errors import ConfigError, ProtocolError
from bridge.core.probe import REPORT_VERSION, ProbeReport, ProgramProblem
from bridge.core.tomlconf import Section


def test_a_report_survives_the_wire() -> None:
    report = ProbeReport(
        site="s", version="1.0", config="/c/site.toml", work_base="/w", sha256="ab" * 32,
        size=7, programs=(ProgramProblem("solve", "/opt/solver", "does not exist"),),
    )  # fmt: skip
    assert ProbeReport.from_json(report.to_json()) == report
    assert report.to_json()["report"] == REPORT_VERSION


@pytest.mark.parametrize(
    "raw",
    [None, [], {"report": 99}, {"report": REPORT_VERSION}, {"report": REPORT_VERSION,
     "programs": [], "size": 1, "site": 3}],
)  # fmt: skip
def test_a_malformed_report_is_a_protocol_error(raw: object) -> None:
    with pytest.raises(ProtocolError):
        ProbeReport.from_json(raw)


def test_an_unknown_key_names_the_closest_allowed_one() -> None:
    with pytest.raises(ConfigError) as info:
        Section("/s.toml", "commands.fatigue", {"progam": "x"}).check_keys({"program", "args"})
    assert str(info.value) == (
        "/s.toml: commands.fatigue: unknown key 'progam'; did you mean 'program'? "
        "allowed keys are args, program"
    )


def test_an_unknown_key_like_none_gets_no_guess() -> None:
    with pytest.raises(ConfigError) as info:
        Section("/s.toml", "", {"zzz": 1}).check_keys({"program", "args"})
    assert str(info.value) == (
        "/s.toml: top level: unknown key 'zzz'; allowed keys are args, program"
    )
