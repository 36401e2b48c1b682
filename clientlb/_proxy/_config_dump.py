"""``clientlb proxy --print-config``: the effective settings written back as TOML.

The tables come in the schema's order. A key at its default is written commented
out, with the default, so that the output shows what was changed and still
parses back to the same settings; so is a table that is off (``[health]``,
``[sticky]`` left out). TOML has no null: a key with no value is shown as
``# key: unset``, and a default range of statuses as ``# key: 200-399``.
"""

from __future__ import annotations

from dataclasses import MISSING
from typing import Any

from .._core import Upstream
from ._config import Settings
from ._schema import TABLES, TOP, Table

#: The top-level keys that are tables, written after the plain keys.
_TABLE_KEYS = frozenset(t.name.partition(".")[0] for t in TABLES)


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (control characters escaped)."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """A TOML value for a setting's Python value (not ``None``: leave it out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, bytes):
        return toml_string(value.decode("utf-8", "backslashreplace"))
    if isinstance(value, Upstream):
        if value.weight == 1 and value.max_connections is None:
            return toml_string(value.url)
        entry = {"url": value.url, "weight": value.weight}
        if value.max_connections is not None:
            entry["max_connections"] = value.max_connections
        return toml_value(entry)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, frozenset | set):
        value = sorted(value)
    if isinstance(value, list | tuple | range):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def address(value: tuple[str, int] | None) -> str | bool:
    """A listen address as the file writes it (``false`` for none)."""
    if value is None:
        return False
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _line(name: str, value: Any, commented: bool) -> str:
    if value is None:
        return f"# {name}: unset"
    if commented and isinstance(value, range) and value.step == 1:
        return f"# {name}: {value.start}-{value.stop - 1}"
    return f"{'# ' if commented else ''}{name} = {toml_value(value)}"


def _top_value(name: str, value: Any) -> Any:
    if name in ("listen", "admin"):
        return address(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _table_lines(table: Table, values: Any, given: bool) -> list[str]:
    """``[table]`` and its keys: ``values`` is the built object (or a dict, or
    ``None`` when the table is off); ``given`` says a dict's keys were set."""
    header = f"[{table.name}]"
    lines = ["", header if values is not None else f"# {header}"]
    for key in table.keys:
        default = table.default(key.name)
        default = None if default is MISSING else default
        budget = table.name == "retry" and key.name == "budget"
        if budget and (values is None or values.budget is not None):
            continue  # written as [retry.budget]
        if budget:
            lines.append("budget = false")
            continue
        if values is None:
            lines.append(_line(key.name, default, True))
            continue
        if isinstance(values, dict):
            value = values.get(key.name, default)
            commented = key.name not in values if given else value == default
        else:
            value = getattr(values, key.name)
            commented = value == default
            if value is None and default is not None:  # turned off: TOML's way
                lines.append(f"{key.name} = false")
                continue
        lines.append(_line(key.name, value, commented))
    return lines


def dump(settings: Settings) -> str:
    """The effective settings as a TOML document that builds the same ``Settings``."""
    lines = [
        "# clientlb proxy: the effective configuration (file, then flags, then defaults).",
        "# A key at its default is commented out.",
    ]
    for key in TOP.keys:
        if key.name in _TABLE_KEYS:
            continue
        value = _top_value(key.name, getattr(settings, key.name))
        default = _top_value(key.name, TOP.default(key.name))
        lines.append(_line(key.name, value, value == default))
    retry = settings.retry
    objects: dict[str, Any] = {
        "sticky": settings.sticky,
        "timeouts": settings.timeouts,
        "retry": retry,
        "retry.budget": retry.budget if retry is not None else None,
        "outlier": settings.outlier,
        "health": settings.health,
        "pool": settings.pool,
        "subset": settings.subset,
        "limits": settings.limits,
        "websockets": settings.websockets,
        "server": settings.server,
        "discovery": settings.discovery or None,
    }
    for table in TABLES:
        lines += _table_lines(table, objects[table.name], given=table.name == "pool")
    return "\n".join(lines) + "\n"
