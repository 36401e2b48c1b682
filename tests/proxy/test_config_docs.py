"""The config schema and the reference generated from it (``docs/config.md``),
which a test keeps from drifting: no servers."""

from __future__ import annotations

import inspect
import tomllib
from dataclasses import fields
from pathlib import Path

from clientlb import (
    HealthCheck,
    Limits,
    OutlierDetection,
    Pool,
    RetryBudget,
    RetryPolicy,
    StickyCookie,
    Subset,
    Upstream,
    WebSocketSettings,
)
from clientlb._proxy import _config
from clientlb._proxy._config import Settings, build, check
from clientlb._proxy._config_docs import default_text, markdown
from clientlb._proxy._engines import Timeouts
from clientlb._proxy._schema import SCHEMA, TOP, every_key

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "config.md"
EXAMPLE = ROOT / "examples" / "proxy.toml"

CLASSES = {
    "upstreams[]": Upstream,
    "sticky": StickyCookie,
    "subset": Subset,
    "timeouts": Timeouts,
    "retry": RetryPolicy,
    "retry.budget": RetryBudget,
    "outlier": OutlierDetection,
    "health": HealthCheck,
    "limits": Limits,
    "websockets": WebSocketSettings,
}
#: ``Pool``'s arguments that have tables or keys of their own, or are for code only.
NOT_IN_POOL_TABLE = {
    "self",
    "upstreams",
    "standbys",
    "algorithm",
    "outlier",
    "retry",
    "health_check",
    "discovery",
    "subset",
    "allow_empty",
    "clock",
    "rng",
}


def test_the_schema_names_every_field_of_the_classes_it_builds() -> None:
    for name, cls in CLASSES.items():
        assert SCHEMA[name].names == {f.name for f in fields(cls) if f.init}, name
    pool_keys = set(inspect.signature(Pool.__init__).parameters) - NOT_IN_POOL_TABLE
    assert SCHEMA["pool"].names == pool_keys
    assert SCHEMA["server"].names == set(_config._SERVER_CHECKS)
    assert TOP.names == {f.name for f in fields(Settings)}
    tables = {name.partition(".")[0] for name in SCHEMA if name not in ("", "upstreams[]")}
    assert tables <= TOP.names


def test_defaults_come_from_the_classes() -> None:
    limits = SCHEMA["limits"]
    assert default_text(limits, limits.key("header_timeout")) == f"`{Limits().header_timeout!r}`"
    health = SCHEMA["health"]
    assert default_text(health, health.key("expected")) == "`200-399`"
    pool = SCHEMA["pool"]
    failure_penalty = inspect.signature(Pool.__init__).parameters["failure_penalty"].default
    assert default_text(pool, pool.key("failure_penalty")) == f"`{failure_penalty!r}`"
    assert default_text(TOP, TOP.key("listen")) == '`"127.0.0.1:8080"`'
    assert default_text(SCHEMA["upstreams[]"], SCHEMA["upstreams[]"].key("url")) == "required"


def test_docs_config_md_is_what_the_generator_writes_now() -> None:
    expected = markdown(EXAMPLE.read_text(encoding="utf-8"))
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/config.md is stale: run python scripts/gen_config_docs.py"
    )


def test_every_key_is_in_the_reference() -> None:
    text = DOC.read_text(encoding="utf-8")
    for table, key in every_key():
        if table.name:
            assert f"## `[{table.name}]`" in text or table.name == "upstreams[]"
        assert f"| `{key.name}` |" in text or key.name in {t.partition(".")[0] for t in SCHEMA}


def test_the_example_parses_and_checks() -> None:
    settings = check(build(tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))))
    assert settings.upstreams[1] == Upstream("http://10.0.0.2:8000", weight=2)
    assert settings.retry is not None and settings.retry.hedge_after == "p95"
    assert settings.health is not None and settings.sticky is not None
    # Every table of the schema is shown in the example (discovery commented out).
    example = EXAMPLE.read_text(encoding="utf-8")
    for name in SCHEMA:
        if name not in ("", "upstreams[]"):
            assert f"[{name}]" in example, name
