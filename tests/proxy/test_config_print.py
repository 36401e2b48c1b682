"""``clientlb proxy --check-config`` and ``--print-config``: the effective
settings written as TOML parse back to the same settings. No servers."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from clientlb import ConfigError, Upstream
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
    "turned off": {
        "upstreams": ["http://a:1"],
        "outlier": {"consecutive_local_failures": False, "probe_after": False},
        "timeouts": {"read": False},
        "sticky": {"max_age": False},
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


def test_false_turns_off_what_none_turns_off_and_nothing_else() -> None:
    settings = build(
        {
            "upstreams": ["http://a:1"],
            "outlier": {"consecutive_gateway_errors": False, "latency_factor": False},
            "timeouts": {"pool": False},
        }
    )
    assert settings.outlier is not None
    assert settings.outlier.consecutive_gateway_errors is None
    assert settings.outlier.latency_factor is None
    assert settings.outlier.consecutive_local_failures == 5  # untouched: the default
    assert settings.timeouts.pool is None
    assert "consecutive_gateway_errors = false" in dump(settings).splitlines()
    with pytest.raises(ConfigError, match=r"outlier\.base_ejection_time"):
        build({"upstreams": ["http://a:1"], "outlier": {"base_ejection_time": False}})
    with pytest.raises(ConfigError, match=r"health\.rise"):
        build({"upstreams": ["http://a:1"], "health": {"rise": False}})


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
