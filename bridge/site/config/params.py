"""A command's parameters in the site config: their declared types and rules, and checking a value.

    [commands.solve.params.cycles]
    type = "int"           # int, float, string, choice or bool
    min = 1
    max = 100000
    default = 1000

A value MInt sends is converted to the parameter's type and checked against its range, pattern
or choices before it can reach an argv element; a string parameter admits by default only
word-like values that cannot be read as an option or as shell syntax. Never pastes a value
into anything: that is ``CommandSpec``'s, into single argv elements only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bridge.core.errors import ParameterInvalid
from bridge.core.job import ParamValue
from bridge.core.tomlconf import Section

PARAM_TYPES = ("int", "float", "string", "choice", "bool")
# Default pattern for string parameters: word-like values that cannot start with '-' (so they
# are never read as options) and contain no path separators, quotes, spaces or shell syntax.
DEFAULT_STRING_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.,:+=@%-]*"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: ParamValue | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str = DEFAULT_STRING_PATTERN
    max_length: int = 256
    choices: tuple[str, ...] = ()
    description: str = ""

    def validate(self, raw: object) -> ParamValue:
        """The value converted to this parameter's type; ParameterInvalid names the rule."""
        value = self._convert(raw)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise self._invalid(raw, f"must be at least {_fmt(self.minimum)}")
            if self.maximum is not None and value > self.maximum:
                raise self._invalid(raw, f"must be at most {_fmt(self.maximum)}")
        return value

    def _convert(self, raw: object) -> ParamValue:
        if self.type == "int":
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and re.fullmatch(r"[+-]?\d{1,18}", raw.strip()):
                return int(raw)
            raise self._invalid(raw, "must be an integer")
        if self.type == "float":
            return self._convert_float(raw)
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
                return raw.lower() in ("true", "1", "yes")
            raise self._invalid(raw, "must be true or false")
        if not isinstance(raw, str):
            raise self._invalid(raw, "must be a string")
        if self.type == "choice":
            if raw not in self.choices:
                raise self._invalid(raw, f"must be one of {', '.join(self.choices)}")
            return raw
        if len(raw) > self.max_length:
            raise self._invalid(raw, f"must be at most {self.max_length} characters")
        if not re.fullmatch(self.pattern, raw):
            raise self._invalid(raw, f"must match the pattern {self.pattern}")
        return raw

    def _convert_float(self, raw: object) -> float:
        try:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError
            value = float(raw)
        except ValueError:
            raise self._invalid(raw, "must be a number") from None
        except OverflowError:  # an int (from JSON) too large for a float
            raise self._invalid(raw, "must be a finite number") from None
        if not math.isfinite(value):
            raise self._invalid(raw, "must be a finite number")
        return value

    def _invalid(self, raw: object, rule: str) -> ParameterInvalid:
        return ParameterInvalid(
            f"parameter {self.name}={str(raw)[:80]!r} is invalid: {rule}", field=self.name
        )


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def render_value(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_param(parent: Section, name: str) -> ParamSpec:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise parent.error("parameter names are identifiers (letters, digits, '_')", name)
    sec = parent.section(name)
    sec.check_keys(
        {"type", "default", "min", "max", "pattern", "max_length", "choices", "description"}
    )
    kind = sec.get("type", str, "string")
    if kind not in PARAM_TYPES:
        raise sec.error(f"{kind!r} is not one of {', '.join(PARAM_TYPES)}", "type")
    choices = tuple(sec.string_list("choices", []))
    if kind == "choice" and not choices:
        raise sec.error("a choice parameter needs a non-empty list of choices", "choices")
    pattern = sec.get("pattern", str, DEFAULT_STRING_PATTERN)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise sec.error(f"is not a valid regular expression: {exc}", "pattern") from exc
    spec = ParamSpec(
        name=name,
        type=kind,
        minimum=_number(sec, "min"),
        maximum=_number(sec, "max"),
        pattern=pattern,
        max_length=sec.get("max_length", int, 256),
        choices=choices,
        description=sec.get("description", str, ""),
    )
    if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
        raise sec.error(f"is less than min ({_fmt(spec.minimum)}): no value could pass", "max")
    if "default" in sec.data:
        try:
            default = spec.validate(sec.data["default"])
        except ParameterInvalid as exc:
            raise sec.error(f"the default fails its own rules: {exc.message}", "default") from exc
        spec = ParamSpec(**{**spec.__dict__, "default": default})
    return spec


def _number(sec: Section, key: str) -> float | None:
    if key not in sec.data:
        return None
    return sec.get(key, float, 0.0)
