"""How setup asks the admin for what it cannot detect, or refuses when it may not ask.

Setup asks only when it runs interactively (a terminal, no ``--yes``); otherwise a missing
value is an error naming the flag to pass, so unattended runs never hang on a prompt.
"""

from __future__ import annotations

from typing import Protocol

from node_setup.errors import MissingValue


class Prompter(Protocol):
    interactive: bool

    def ask(self, question: str, default: str | None = None, hidden: bool = False) -> str: ...

    def confirm(self, question: str, default: bool = True) -> bool: ...

    def echo(self, text: str = "") -> None: ...


class Unattended:
    """Never asks: every value comes from flags; output goes to a list (or is printed)."""

    interactive = False

    def __init__(self, echo: bool = True) -> None:
        self.lines: list[str] = []
        self._print = echo

    def ask(self, question: str, default: str | None = None, hidden: bool = False) -> str:
        raise MissingValue(f"{question}: no value given")  # callers go through need()

    def confirm(self, question: str, default: bool = True) -> bool:
        return True  # --yes

    def echo(self, text: str = "") -> None:
        self.lines.append(text)
        if self._print:
            print(text)


def need(prompter: Prompter, value: str | None, flag: str, question: str) -> str:
    """``value`` if given, else the admin's answer; MissingValue names ``flag`` otherwise."""
    if value:
        return value
    if not prompter.interactive:
        raise MissingValue(f"{flag} is required here ({question.lower()}); pass {flag}")
    answer = prompter.ask(question).strip()
    if not answer:
        raise MissingValue(f"no answer for {question!r}; pass {flag}")
    return answer
