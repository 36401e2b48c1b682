"""``clientlb proxy --check-config`` and ``--print-config``: the effective
settings written as TOML parse back to the same settings. No servers."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from clientlb import Upstream
from clientlb._cli import main, parser, proxy_settings
from clientlb._proxy._config import build, upstream_entries
from clientlb._proxy._config_dump import dump

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "proxy.toml"

ROUND_TRIPS = {
    "defaults": {},
    "example": tomllib.loads(EXAMPLE.read_text(encoding="utf-8")),
    "changed": {
        "listen": "[::1]:0",
        "admin": "127.0.0.1:9901",
        "upstreams": ["http://a:1", {"url": "http://b:2/p", "weight": 0.5, "max_connections": 3}],
        "standbys": [{"url": "https://c:3", "weight": 2}],
        "algorithm": "consistent_hash",
        "hash_on": "header:X-User",
        "trusted_proxies": "10.0.0.0/8",
        "preserve_host": True,
        "verify": False,
        "retry": {"budget": False, "retry_on_status": [500], "timeout": 3},
        "outlier": {"consecutive_5xx": 2, "latency_factor": 1.5},
        "health": {"path": "/h?deep=1", "expected": [200]},
        "pool": {"slow_start": 0.0, "max_connections": 9},
        "limits": {"head": 65536, "upstream_connections": 2},
        "websockets": {"deflate": False},
        "server": {"log_level": "debug", "backlog": 7},
        "sticky": {"name": "srv", "secret": "sixteen\tbytes \\ or \u00e9 more"},
        "discovery": {"uris": "file:///srv/up.toml"},
        "subset": {"size": 20, "client": 3, "clients": 100},
    },
}


@pytest.mark.parametrize("data", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_print_config_parses_back_to_the_same_settings(data: dict[str, object]) -> None:
    settings = build(data)
    text = dump(settings)
    again = build(tomllib.loads(text))
    assert again == settings
    assert upstream_entries(again) == upstream_entries(
        settings
    )  # weights too: Upstream == is by address
    assert dump(build(tomllib.loads(text))) == text


def test_print_config_comments_out_defaults_and_tables_left_out() -> None:
    lines = dump(build({"upstreams": ["http://a:1"], "pool": {"slow_start": 0.0}})).splitlines()
    assert 'upstreams = ["http://a:1"]' in lines
    assert '# algorithm = "round_robin"' in lines
    assert "# [health]" in lines and "# [sticky]" in lines and "# [retry]" in lines
    assert "slow_start = 0.0" in lines  # given, though equal to the default
    assert "# hash_on: unset" in lines


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_prints_one_line_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('upstreams = ["http://a:1", "http://b:2"]\n[health]\npath = "/up"\n')
    args = ["proxy", "--config", str(config), "--algorithm", "random", "--check-config"]
    code, out, err = run(args, capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "config OK: 2 upstreams, 0 standbys, algorithm random, listen 127.0.0.1:8080, "
        "health checks on /up"
    ]


def test_check_config_of_a_bad_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('upstreams = ["http://a:1"]\n[health]\ninterval = 0\n')
    code, out, err = run(["proxy", "--config", str(config), "--check-config"], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == ["clientlb proxy: error: health.interval: must be > 0, got 0"]


def test_print_config_merges_file_flags_and_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('upstreams = ["http://a:1"]\nalgorithm = "random"\n[pool]\nslow_start = 5\n')
    args = ["proxy", "--config", str(config), "--upstream", "http://b:2", "--health-path", "/h"]
    code, out, err = run([*args, "--print-config"], capsys)
    assert (code, err) == (0, "")
    effective = proxy_settings(parser().parse_args(args))
    assert build(tomllib.loads(out)) == effective
    assert effective.upstreams == (Upstream("http://b:2"),)  # the flag won
    assert effective.algorithm == "random" and effective.pool == {"slow_start": 5}
