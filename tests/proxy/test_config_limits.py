"""Connection limits in ``clientlb proxy``'s config file: the pool's
``max_connections`` and ``max_pending``, and an upstream table's own
``max_connections``, reach the pool the proxy serves with."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from clientlb import ConfigError
from clientlb._cli import main
from clientlb._proxy._config import build, check
from clientlb._proxy._serve import build_app

CONFIG = """
upstreams = [
    "http://127.0.0.1:8001",
    { url = "http://127.0.0.1:8002", weight = 2, max_connections = 5 },
]
standbys = [{ url = "http://127.0.0.1:8009", max_connections = 1 }]

[pool]
max_connections = 50
max_pending = 10
"""


def test_limits_reach_the_pool() -> None:
    settings = check(build(tomllib.loads(CONFIG)))
    pool = build_app(settings).pool
    snapshot = pool.snapshot()
    assert (snapshot["max_connections"], snapshot["max_pending"]) == (50, 10)
    assert (snapshot["pending"], snapshot["rejected"]) == (0, 0)
    limits = {row["url"]: row["max_connections"] for row in snapshot["upstreams"]}
    assert limits == {
        "http://127.0.0.1:8001": 50,  # the pool's
        "http://127.0.0.1:8002": 5,  # its own wins
        "http://127.0.0.1:8009": 1,
    }
    weights = {row["url"]: row["weight"] for row in snapshot["upstreams"]}
    assert weights["http://127.0.0.1:8002"] == 2


def test_no_limits_by_default() -> None:
    pool = build_app(check(build({"upstreams": ["http://127.0.0.1:8001"]}))).pool
    snapshot = pool.snapshot()
    assert (snapshot["max_connections"], snapshot["max_pending"]) == (None, 0)
    assert snapshot["upstreams"][0]["max_connections"] is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[pool]\nmax_connections = 0\n", "pool.max_connections"),
        ("[pool]\nmax_pending = -1\n", "pool.max_pending"),
        ("[pool]\nmax_pending = 1.5\n", "pool.max_pending"),
        (
            'upstreams = [{ url = "http://127.0.0.1:1", max_connections = 0 }]\n',
            "upstreams: max_connections",
        ),
        (
            'upstreams = [{ url = "http://127.0.0.1:1", max_connections = "9" }]\n',
            "upstreams: max_connections",
        ),
    ],
)
def test_bad_limits_name_their_key(
    tmp_path: Path, text: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if not text.startswith("upstreams"):
        text = 'upstreams = ["http://127.0.0.1:1"]\n' + text
    config = tmp_path / "proxy.toml"
    config.write_text(text)
    assert main(["proxy", "--config", str(config)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"clientlb proxy: error: {named}: "), line


def test_an_unknown_key_in_an_upstream_table_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown key 'max_conns'"):
        build({"upstreams": [{"url": "http://127.0.0.1:1", "max_conns": 3}]})
