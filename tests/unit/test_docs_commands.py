"""Every ``mint-bridge`` command the READMEs and the docs pages show exists, with the options
it is shown with.

Commands are taken from fenced code blocks and from inline code that starts with
``mint-bridge ``; each is resolved through the real click groups (lazy ones included), and
each ``--option`` it uses must be one of that command's parameters. Placeholders written as
alternatives (``list|show``) or elisions (``...``) are not commands and are left out.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from bridge.cli import main

ROOT = Path(__file__).resolve().parents[2]
# The READMEs and every page of the docs site (docs/**/*.md), so a moved section stays checked.
_PAGES = sorted(str(page.relative_to(ROOT)) for page in (ROOT / "docs").rglob("*.md"))
DOCS = ["README.md", "README.ja.md", *_PAGES]

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`(mint-bridge [^`\n]+)`")
# ``mint-bridge`` (possibly by a path: ``~/mint-bridge/bin/mint-bridge``) where a shell line
# or a command after an operator starts; elsewhere it is prose, as in the layout tree.
_PROGRAM = re.compile(r"(?:^\s*(?:\$\s+)?|(?:&&|\|\||;|\||\$\()\s*)(?:\S*/)?mint-bridge(?=\s)")
_NOT_A_COMMAND = ("|", "...", "…", "[", "<")


@dataclass(frozen=True)
class Shown:
    doc: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: mint-bridge {' '.join(self.words)}"


def _logical_lines(block: str) -> list[str]:
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _commands_in(text: str) -> list[str]:
    """The ``mint-bridge`` invocations on one shell line, each up to the next operator."""
    text = text.split(" #", 1)[0]
    if text.lstrip().startswith("#"):
        return []
    found = []
    for match in _PROGRAM.finditer(text):
        rest = re.split(r"\s(?:&&|\|\||\||;|<|>|2>)\s?", text[match.end() :], maxsplit=1)[0]
        found.append(rest.strip())
    return found


def shown_commands() -> list[Shown]:
    shown: list[Shown] = []
    for doc in DOCS:
        path = ROOT / doc
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for fence in _FENCE.finditer(text):
            start = text.count("\n", 0, fence.start(1)) + 1
            for offset, line in enumerate(_logical_lines(fence.group(1))):
                shown += [Shown(doc, start + offset, tuple(shlex.split(c)))
                          for c in _commands_in(line) if not _placeholder(c)]  # fmt: skip
        for span in _INLINE.finditer(text.replace("\n", " ")):
            rest = span.group(1).removeprefix("mint-bridge ")
            if not _placeholder(rest):
                line = text.count("\n", 0, text.find(span.group(1).split()[1])) + 1
                shown.append(Shown(doc, line, tuple(shlex.split(rest))))
    return shown


def _placeholder(command: str) -> bool:
    return any(mark in command for mark in _NOT_A_COMMAND)


def resolve(words: tuple[str, ...]) -> tuple[click.Command, list[str]]:
    """The command ``words`` name and the words after its name."""
    command: click.Command = main
    ctx = click.Context(main, info_name="mint-bridge")
    rest = list(words)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            raise LookupError(f"no command {rest[0]!r} under {ctx.command_path!r}")
        ctx = click.Context(sub, parent=ctx, info_name=rest[0])
        command, rest = sub, rest[1:]
    return command, rest


def unknown_options(command: click.Command, rest: list[str]) -> list[str]:
    known = {"--help"}
    for param in command.params:
        known.update(getattr(param, "opts", []))
        known.update(getattr(param, "secondary_opts", []))
    if command.context_settings.get("ignore_unknown_options"):
        return []
    options = [word.split("=", 1)[0] for word in rest if word.startswith("-") and word != "-"]
    return [option for option in options if option not in known]


def test_the_docs_show_commands() -> None:
    # Guards the extraction itself: the quick start's demo and the setup commands are found.
    words = {shown.words[:2] for shown in shown_commands()}
    assert ("demo",) in {w[:1] for w in words}
    assert ("setup", "site") in words
    # ... and so are those of the docs pages (the audit commands, the broker's tokens).
    docs = {shown.words[:3] for shown in shown_commands() if shown.doc.startswith("docs/")}
    assert ("site", "audit", "verify") in docs
    assert ("broker", "token", "create") in docs


@pytest.mark.parametrize("shown", shown_commands(), ids=str)
def test_a_shown_command_exists_with_its_options(shown: Shown) -> None:
    try:
        command, rest = resolve(shown.words)
    except LookupError as exc:
        pytest.fail(f"{shown}: {exc}")
    assert not isinstance(command, click.Group) or not shown.words, str(shown)
    assert unknown_options(command, rest) == [], f"{shown}: unknown option(s)"


def test_an_unknown_subcommand_or_option_is_caught() -> None:
    with pytest.raises(LookupError):
        resolve(("broker", "tokn", "create"))
    command, rest = resolve(("broker", "token", "create", "--clinet", "x"))
    assert unknown_options(command, rest) == ["--clinet"]
