"""``File`` under the thread runner and the async one (asyncio, trio)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from clientlb import ConfigError, Pool
from clientlb.discovery import File

from ..waiting import wait_for
from .conftest import Runner


def tiers(pool: Pool) -> tuple[dict[str, float], dict[str, float]]:
    """Serving members by tier, draining ones left out: {url: weight}."""
    snap = pool.snapshot()["upstreams"]
    live = [u for u in snap if u["state"] != "draining"]
    return (
        {u["url"]: u["weight"] for u in live if u["tier"] == "primary"},
        {u["url"]: u["weight"] for u in live if u["tier"] == "standby"},
    )


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_file_changes_reach_the_pool(tmp_path: Path, run_background: Runner) -> None:
    path = tmp_path / "upstreams.toml"
    write(path, 'upstreams = ["http://a:1", {url = "http://b:1", weight = 2}]\n')
    pool = Pool(allow_empty=True)
    with run_background(pool, discovery=File(path, interval=0.02)):
        wait_for(lambda: tiers(pool) == ({"http://a:1": 1, "http://b:1": 2}, {}), timeout=5)
        write(path, 'upstreams = ["http://b:1"]\nstandbys = ["http://s:1"]\n')
        wait_for(lambda: tiers(pool) == ({"http://b:1": 1}, {"http://s:1": 1}), timeout=5)
        for n in range(3):  # rewrites within one timestamp tick are still seen
            write(path, f'upstreams = ["http://b:1", "http://n{n}:1"]\n')
        wait_for(lambda: tiers(pool) == ({"http://b:1": 1, "http://n2:1": 1}, {}), timeout=5)


def test_json_file(tmp_path: Path, run_background: Runner) -> None:
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps({"upstreams": [{"url": "http://a:1", "weight": 3}]}))
    pool = Pool(allow_empty=True)
    with run_background(pool, discovery=File(path, interval=0.02)):
        wait_for(lambda: tiers(pool) == ({"http://a:1": 3}, {}), timeout=5)


def test_bad_or_missing_file_keeps_the_last_good_set(
    tmp_path: Path, run_background: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clientlb.discovery")
    path = tmp_path / "upstreams.toml"
    write(path, 'upstreams = ["http://a:1", "http://b:1"]\n')
    pool = Pool(allow_empty=True)
    provider = File(path, interval=0.01)
    good = ({"http://a:1": 1, "http://b:1": 1}, {})
    with run_background(pool, discovery=provider):
        wait_for(lambda: tiers(pool) == good, timeout=5)
        for garbage in ("upstreams = [", 'upstreams = ["ftp://x"]', "upstreams = []", "x = 1"):
            write(path, garbage)
            wait_for(
                lambda: provider.feed and provider.feed.state in ("invalid", "empty"), timeout=5
            )
            seen = provider.feed.answers if provider.feed else 0
            wait_for(lambda n=seen: provider.feed and provider.feed.answers >= n + 3, timeout=5)
            assert tiers(pool) == good
        os.unlink(path)
        wait_for(lambda: provider.feed and provider.feed.state == "unreachable", timeout=5)
        assert tiers(pool) == good
        write(path, 'upstreams = ["http://c:1"]\n')
        wait_for(lambda: tiers(pool) == ({"http://c:1": 1}, {}), timeout=5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # once per distinct bad answer, never per retry
    assert [w.split("registry ", 1)[1].split(":")[0] for w in warnings] == [
        "invalid",
        "invalid",
        "empty",
        "invalid",
        "unreachable",
    ]
    assert "not valid TOML" in warnings[0] and "ftp://x" in warnings[1]
    assert "unknown keys ['x']" in warnings[3]
    back = [r.getMessage() for r in caplog.records if "registry is back" in r.getMessage()]
    assert len(back) == 1 and "repeated failures were not logged" in back[0]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"format": "yaml"}, "format"),
        ({"interval": 0}, "interval"),
        ({"min_backoff": -1}, "min_backoff"),
    ],
)
def test_file_options_are_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        File("x.toml", **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
