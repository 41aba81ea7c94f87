"""Which command lines the console script serves itself (the SSH forced command) and which go to
the click CLI."""

from __future__ import annotations

import pytest

from bridge.launcher import serve_ssh_config


@pytest.mark.parametrize(
    ("args", "config"),
    [
        (["site", "serve-ssh", "--config", "/etc/site.toml"], "/etc/site.toml"),
        (["site", "serve-ssh", "--config=/etc/site.toml"], "/etc/site.toml"),
        (["site", "serve-ssh", "--config", "relative/site.toml"], "relative/site.toml"),
    ],
)
def test_the_forced_command_is_served_without_click(args: list[str], config: str) -> None:
    assert serve_ssh_config(args) == config


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["--version"],
        ["site", "serve-ssh"],
        ["site", "serve-ssh", "--help"],
        ["site", "serve-ssh", "--config", "--help"],
        ["site", "serve-ssh", "--config", "/etc/site.toml", "--help"],
        ["site", "serve-ssh", "--config", "/etc/site.toml", "extra"],
        ["site", "serve-ssh", "--configx=/etc/site.toml"],
        ["site", "cleanup", "--config", "/etc/site.toml"],
        ["run", "--config", "/etc/bridge.toml"],
    ],
)
def test_any_other_command_line_goes_to_click(args: list[str]) -> None:
    assert serve_ssh_config(args) is None
