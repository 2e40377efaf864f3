"""Writing configs back as TOML (the standard library reads TOML but does not write it)."""

from __future__ import annotations

import json
from typing import Any


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dumps(data: dict[str, dict[str, Any]]) -> str:
    """Tables of scalars and lists, as configs are; a None value is left out."""
    lines: list[str] = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    return "\n".join(lines)
