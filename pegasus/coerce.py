"""Typed-mapping coercion: a dataclass built from a plain mapping (TOML, JSON, `--set` values),
with every key and type checked and the culprit named (`data.res: expected an integer, got
'big'`). Configs and backbone options both use it; it imports neither.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from typing import Any, Literal

from pegasus.errors import ConfigError


def from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        valid = ", ".join(sorted(names)) or "none"
        raise ConfigError(f"{_join(where, unknown[0])}: unknown key; valid keys here: {valid}")
    values = {name: _coerce(hints[name], data[name], _join(where, name)) for name in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


class _Mismatch(ConfigError):
    """A value of the wrong kind: "<where>: expected <what>, got <value>". A union of types
    gathers its members' `what`s into one such line."""

    def __init__(self, where: str, what: str, value: Any) -> None:
        super().__init__(f"{where}: expected {what}, got {value!r}")
        self.what = what


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _coerce(option, value, where)
            except ConfigError as e:
                errors.append(e)
        if all(isinstance(e, _Mismatch) for e in errors):  # "expected true or false or 'auto'"
            raise _Mismatch(where, " or ".join(dict.fromkeys(e.what for e in errors)), value)
        raise ConfigError(f"{where}: " + " or ".join(dict.fromkeys(
            str(e).split(": ", 1)[1] for e in errors)))
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch(where, repr(args[0]) if len(args) == 1 else
                        f"one of {', '.join(map(repr, args))}", value)
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch(where, "nothing", value)
    if origin is list:
        if isinstance(value, str):  # "horse,bird" from a flag
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise _Mismatch(where, "a list", value)
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch(where, "a list", value)
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Mismatch(where, "a table", value)
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(where, "true or false", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(where, "an integer", value)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch(where, "a number", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch(where, "a string", value)
    raise ConfigError(f"{where}: unsupported type {tp!r}")


def parse_value(text: str) -> Any:
    """A `--set` value: TOML syntax when it parses (64, 1e-4, true, ["a", "b"]), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
