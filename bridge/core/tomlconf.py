"""Reading TOML config files into typed values, with errors that name the file and the key."""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable
from typing import Any, TypeVar

from bridge.core.errors import ConfigError

T = TypeVar("T")


def load_toml(path: str) -> dict[str, Any]:
    """Parse ``path``; a missing or malformed file is a ConfigError saying what to do."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file {path} does not exist; create it or pass --config",
            fix=f"create {path} or pass --config",
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}",
            fix=f"make {path} readable by this account",
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}",
            fix=f"correct the TOML syntax in {path} at the line the message names",
        ) from exc


class Section:
    """A table of a config file being read; remembers its key path for error messages."""

    def __init__(self, source: str, path: str, data: object) -> None:
        self.source = source
        self.path = path
        if not isinstance(data, dict):
            raise self.error("must be a table")
        self.data: dict[str, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, message: str, key: str | None = None) -> ConfigError:
        where = self.key(key) if key else self.path or "top level"
        return ConfigError(f"{self.source}: {where}: {message}", field=where)

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.data) - allowed)
        if unknown:
            # A typo is the usual cause: name the key it most likely meant.
            close = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.error(
                f"unknown key {unknown[0]!r}; {hint}allowed keys are {', '.join(sorted(allowed))}"
            )

    def get(self, name: str, kind: type[T], default: T) -> T:
        value = self.data.get(name, default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(f"must be a {kind.__name__}, not {type(value).__name__}", name)
        return value

    def require(self, name: str, kind: type[T]) -> T:
        if name not in self.data:
            raise self.error("is required", name)
        value = self.data[name]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(f"must be a {kind.__name__}, not {type(value).__name__}", name)
        return value

    def convert(self, name: str, parse: Callable[[object], T], default: T) -> T:
        if name not in self.data:
            return default
        try:
            return parse(self.data[name])
        except ValueError as exc:
            raise self.error(str(exc), name) from exc

    def section(self, name: str) -> Section:
        return Section(self.source, self.key(name), self.data.get(name, {}))

    def path_value(self, name: str, default: str) -> str:
        """A filesystem path, with ``~`` expanded."""
        return os.path.expanduser(self.get(name, str, default))

    def prom_file_value(self, name: str, example: str) -> str | None:
        """A node-exporter textfile (``.prom``) named in the config, as ``file_value``; None
        when the key is absent or empty."""
        path = self.file_value(name, "")
        if not path:
            return None
        if not path.endswith(".prom"):
            raise self.error(
                f"{self.data.get(name)!r:.100} must end in '.prom' (node-exporter reads only "
                f'those files), e.g. "{example}"',
                name,
            )
        return path

    def file_value(self, name: str, default: str) -> str:
        """A file named in the config: ``~`` expanded, and a relative path taken from the
        config file's directory (the one rule of every config), never the current one."""
        value = self.path_value(name, default)
        if not value or os.path.isabs(value):
            return value
        return os.path.join(os.path.dirname(os.path.abspath(self.source)), value)

    def string_list(self, name: str, default: list[str]) -> list[str]:
        value = self.data.get(name, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error("must be a list of strings", name)
        return list(value)
