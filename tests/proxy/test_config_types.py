"""Every key ``clientlb proxy --config`` accepts refuses a value of the wrong type
with exit status 2 and one line on stderr naming the key.

The keys come from the code: the settings' fields, the policies' fields and
annotations, the pool's arguments, the server defaults. A new key is covered as soon
as it exists, or this test stops and asks for a rule saying which TOML types it takes.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from clientlb import (
    HealthCheck,
    OutlierDetection,
    Pool,
    RetryBudget,
    RetryPolicy,
    StickyCookie,
    Subset,
    Upstream,
)
from clientlb._cli import main
from clientlb._proxy import _config
from clientlb._proxy._config import Settings, build
from clientlb._proxy._limits import Limits, WebSocketSettings

#: One TOML value of each kind; ``nan`` and ``inf`` are floats no key accepts.
SAMPLES = {
    "str": '"x"',
    "true": "true",
    "false": "false",
    "int": "7",
    "float": "1.5",
    "nan": "nan",
    "inf": "-inf",
    "list": "[7]",
    "table": "{ a = 7 }",
    "datetime": "1979-05-27T07:32:00Z",
}
NUMBER = frozenset({"int", "float"})
BOOL = frozenset({"true", "false"})
TABLE = frozenset({"table"})

#: The top-level keys and the TOML kinds each takes (checked against ``Settings``).
TOP: dict[str, frozenset[str]] = {
    "listen": frozenset({"str"}),
    "admin": frozenset({"str", "false"}),
    "admin_token_file": frozenset({"str"}),
    "upstreams": frozenset({"list"}),
    "standbys": frozenset({"list"}),
    "algorithm": frozenset({"str"}),
    "hash_on": frozenset({"str"}),
    "sticky": TABLE,
    "trusted_proxies": frozenset({"str", "list"}),
    "preserve_host": BOOL,
    "retry_body_limit": frozenset({"int"}),
    "verify": frozenset({"str"}) | BOOL,
    "timeouts": TABLE,
    "retry": TABLE,
    "outlier": TABLE,
    "health": TABLE,
    "pool": TABLE,
    "subset": TABLE,
    "server": TABLE,
    "limits": TABLE,
    "websockets": TABLE,
    "discovery": TABLE,
}
#: Keys whose TOML kinds do not follow from their Python annotation.
OVERRIDES = {
    "retry.budget": frozenset({"table", "false"}),  # false: no budget
    "discovery.uris": frozenset({"str", "list"}),
    "sticky.secret": frozenset({"str", "false"}),  # bytes from Python only
}
#: An upstream given as a table: ``upstreams = [{ url = ..., weight = ... }]``.
ENTRY = "upstreams[]"
BASE = 'upstreams = ["http://127.0.0.1:1"]\n'


def toml_kinds(annotation: Any) -> frozenset[str]:
    """The TOML kinds a value of ``annotation`` is written as."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return frozenset().union(*(toml_kinds(a) for a in typing.get_args(annotation)))
    if annotation is type(None):
        return frozenset({"false"})  # TOML has no null: false stands for it
    if annotation is float:
        return NUMBER
    if annotation is int:
        return frozenset({"int"})
    if annotation is bool:
        return BOOL
    if annotation is str:
        return frozenset({"str"})
    if annotation is range or typing.get_origin(annotation) is frozenset:
        return frozenset({"list"})
    raise AssertionError(f"no TOML kinds for {annotation!r}: add a rule or an override")


def accepted_kinds() -> dict[str, frozenset[str]]:
    """Every key the config file accepts (``table.key``), with its TOML kinds."""
    assert set(TOP) == {f.name for f in fields(Settings)}
    keys = dict(TOP)
    timeouts = typing.get_type_hints(Settings)["timeouts"]
    tables: list[tuple[str, Any, list[str]]] = [
        ("timeouts", timeouts, [f.name for f in fields(timeouts)]),
        ("retry", RetryPolicy, [f.name for f in fields(RetryPolicy)]),
        ("retry.budget", RetryBudget, [f.name for f in fields(RetryBudget)]),
        ("outlier", OutlierDetection, [f.name for f in fields(OutlierDetection)]),
        ("health", HealthCheck, [f.name for f in fields(HealthCheck)]),
        ("pool", Pool.__init__, sorted(_config._POOL_KEYS)),
        ("limits", Limits, [f.name for f in fields(Limits)]),
        ("websockets", WebSocketSettings, [f.name for f in fields(WebSocketSettings)]),
        ("sticky", StickyCookie, [f.name for f in fields(StickyCookie)]),
        ("subset", Subset, [f.name for f in fields(Subset)]),
        (ENTRY, Upstream, sorted(_config._UPSTREAM_KEYS)),
    ]
    for table, owner, names in tables:
        hints = typing.get_type_hints(owner)
        for name in names:
            key = f"{table}.{name}"
            keys[key] = OVERRIDES.get(key) or toml_kinds(hints[name])
    assert set(_config._POOL_KEYS) <= set(inspect.signature(Pool.__init__).parameters)
    for name, default in _config._SERVER_DEFAULTS.items():
        keys[f"server.{name}"] = toml_kinds(type(default))
    keys["discovery.uris"] = OVERRIDES["discovery.uris"]
    return keys


def config_text(key: str, value: str) -> str:
    """A config file setting ``key`` to ``value``, the rest valid."""
    table, _, name = key.rpartition(".")
    if table == ENTRY:
        entry = {"url": '"http://127.0.0.1:1"', name: value}
        return f"upstreams = [{{ {', '.join(f'{k} = {v}' for k, v in entry.items())} }}]\n"
    if not table:
        return f"{key} = {value}\n" + ("" if key == "upstreams" else BASE)
    return f"{BASE}[{table}]\n{name} = {value}\n"


def named(key: str) -> str:
    """How the error line names ``key``: upstream tables name the list, then the key."""
    table, _, name = key.rpartition(".")
    return f"upstreams: {name}" if table == ENTRY else key


CASES = [
    (key, kind)
    for key, kinds in sorted(accepted_kinds().items())
    for kind in SAMPLES
    if kind not in kinds
]


@pytest.fixture
def never_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that passes must not start a server in these tests."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the configuration was accepted")

    monkeypatch.setattr("clientlb._proxy._serve.run", refuse)


def run_config(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Exit status 2 and exactly one line on stderr: return the line."""
    config = tmp_path / "proxy.toml"
    config.write_text(text)
    assert main(["proxy", "--config", str(config)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.usefixtures("never_serve")
@pytest.mark.parametrize(("key", "kind"), CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_every_key_refuses_a_wrong_type(
    tmp_path: Path, key: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_config(tmp_path, config_text(key, SAMPLES[kind]), capsys)
    assert line.startswith(f"clientlb proxy: error: {named(key)}: "), line


def test_every_key_is_covered() -> None:
    keys = accepted_kinds()
    assert {key for key, _ in CASES} == set(keys)
    for table in ("timeouts", "retry", "retry.budget", "outlier", "health", "pool", "server"):
        assert any(k.startswith(f"{table}.") for k in keys), table
    assert {"server.backlog", "health.expected", "retry.retry_on_status"} <= set(keys)


@pytest.mark.usefixtures("never_serve")
@pytest.mark.parametrize("key", [k for k, v in sorted(TOP.items()) if v == TABLE])
def test_an_array_of_tables_where_a_table_is_expected(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_config(tmp_path, f"{BASE}[[{key}]]\na = 1\n", capsys)
    assert line.startswith(f"clientlb proxy: error: {key}: expected a table"), line


def test_valid_values_of_every_table_build() -> None:
    settings = build(
        {
            "upstreams": [{"url": "http://127.0.0.1:1", "weight": 0.5}],
            "admin": False,
            "timeouts": {"connect": 1, "read": 2.5},
            "retry": {"retry_on_status": [503], "budget": {"ratio": 0.5, "window": 60}},
            "outlier": {"consecutive_5xx": 3, "latency_factor": 2},
            "health": {"path": "/health?deep=1", "expected": [200, 204]},
            "pool": {"slow_start": 30, "slow_start_min_share": 0.2},
            "server": {
                "graceful_shutdown": 1.9,
                "log_level": "DEBUG",
                "backlog": 1,
                "loop": "asyncio",
            },
            "discovery": {"uris": "file:///srv/upstreams.toml"},
            "sticky": {"name": "srv", "secret": "s" * 16, "max_age": 60, "secure": True},
            "subset": {"size": 20, "client": 3, "clients": 100},
        }
    )
    assert settings.subset == Subset(20, 3, 100)
    assert settings.pool_options()["subset"] == Subset(20, 3, 100)
    assert settings.admin is None
    assert settings.sticky == StickyCookie("srv", "s" * 16, 60, True)
    assert settings.upstreams[0].weight == 0.5
    assert (settings.timeouts.connect, settings.timeouts.read) == (1, 2.5)
    assert settings.retry is not None and settings.retry.budget == RetryBudget(ratio=0.5, window=60)
    assert settings.retry.retry_on_status == frozenset({503})
    assert settings.health is not None and settings.health.expected == frozenset({200, 204})
    assert settings.pool == {"slow_start": 30, "slow_start_min_share": 0.2}
    assert settings.server["graceful_shutdown"] == 1.9  # seconds, not truncated
    assert settings.server["log_level"] == "debug"
    assert build({"retry": {"budget": False}}).retry == RetryPolicy(budget=None)
    assert build({"server": {"graceful_shutdown": 2}}).server["graceful_shutdown"] == 2.0


def test_building_leaves_the_mapping_as_it_was() -> None:
    """The same mapping builds twice (a reload): nothing is popped or replaced in it."""
    data = {
        "upstreams": ["http://127.0.0.1:1"],
        "retry": {"budget": {"ratio": 0.5}},
        "discovery": {"uris": ["file:///srv/upstreams.toml"]},
    }
    first, second = build(data), build(data)
    assert first == second
    assert data["retry"] == {"budget": {"ratio": 0.5}}
    assert data["discovery"] == {"uris": ["file:///srv/upstreams.toml"]}
