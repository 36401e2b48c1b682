"""The proxies' Python arguments: every bad value is a ConfigError naming it,
raised when the proxy is built (the config file's keys are tested through the CLI
in test_config_types.py)."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from clientlb import ConfigError, Limits, Pool, ProxyApp, StickyCookie, WSGIProxy

URL = "http://127.0.0.1:1"


@pytest.mark.parametrize("proxy", [ProxyApp, WSGIProxy])
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"preserve_host": "no"}, "preserve_host"),
        ({"preserve_host": 1}, "preserve_host"),
        ({"retry_body_limit": -1}, "retry_body_limit"),
        ({"retry_body_limit": 10**30}, "retry_body_limit"),
        ({"retry_body_limit": 1.5}, "retry_body_limit"),
        ({"timeout": "5"}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": httpx.Timeout(5.0, read=math.inf)}, "timeout.read"),
        ({"verify": "ca\0.pem"}, "verify"),
        ({"verify": 3}, "verify"),
        ({"limits": {"head": 1}}, "limits"),
        ({"standbys": 5}, "standbys"),
        ({"slow_start": "soon"}, "slow_start"),
        ({"retry": 3}, "retry"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "trusted_proxies"),
        ({"engine": 5}, "engine"),
        ({"health_check": "/health"}, "health_check"),
        ({"discovery": 5}, "discovery"),
    ],
)
def test_a_bad_argument_is_a_config_error_naming_it(
    proxy: Any, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        proxy([URL], **options)
    assert info.value.field == field, info.value


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"head": 0}, "head"),
        ({"header_timeout": -1.0}, "header_timeout"),
        ({"header_timeout": math.nan}, "header_timeout"),
        ({"client_connections": 1.5}, "client_connections"),
        ({"client_connections": True}, "client_connections"),
        ({"upstream_connections": 2**40}, "upstream_connections"),
        ({"request_line": 64 * 1024, "head": 32 * 1024}, "head"),
    ],
)
def test_bad_limits_are_refused(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Limits(**values)
    assert info.value.field == field


@pytest.mark.parametrize("proxy", [ProxyApp, WSGIProxy])
@pytest.mark.parametrize(
    "option",
    [
        {"algorithm": "random"},
        {"retry": None},
        {"outlier": None},
        {"slow_start": 1.0},
        {"fail_back_after": 1.0},
        {"health_check": None},
        {"standbys": [URL + "9"]},
    ],
)
def test_pool_options_beside_a_pool_are_refused(proxy: Any, option: dict[str, Any]) -> None:
    """They would be dropped, or would override the pool's own, silently."""
    with pytest.raises(ConfigError) as info:
        proxy(pool=Pool([URL]), **option)
    assert info.value.field == next(iter(option))


@pytest.mark.parametrize("proxy", [ProxyApp, WSGIProxy])
@pytest.mark.parametrize(
    "options",
    [
        {"algorithm": "consistent_hash"},  # a key of the user's: none given
        {"algorithm": "round_robin", "hash_on": "header:x-user"},
        {"hash_on": "cookie:session"},  # round robin by default
        {"algorithm": "least_connections", "hash_on": lambda request: "k"},
        {"algorithm": "consistent_hash", "hash_on": "header:"},
        {"algorithm": "consistent_hash", "hash_on": "cookie:a b"},
        {"algorithm": "consistent_hash", "hash_on": "query:q"},
        {"algorithm": "consistent_hash", "hash_on": 7},
        {"pool": Pool([URL], algorithm="consistent_hash")},
        {"pool": Pool([URL]), "hash_on": "header:x"},
    ],
)
def test_hash_on_is_checked_against_the_algorithm(proxy: Any, options: dict[str, Any]) -> None:
    upstreams = None if "pool" in options else [URL]
    with pytest.raises(ConfigError) as info:
        proxy(upstreams, **options)
    assert info.value.field == "hash_on", info.value


@pytest.mark.parametrize("proxy", [ProxyApp, WSGIProxy])
@pytest.mark.parametrize(
    "options",
    [
        {"algorithm": "ip_hash"},  # the client address
        {"algorithm": "ip_hash", "hash_on": "cookie:session"},
        {"algorithm": "consistent_hash", "hash_on": "header:X-Tenant"},
        {"algorithm": "consistent_hash", "hash_on": lambda request: None},
        {"sticky": StickyCookie(), "algorithm": "least_connections"},
    ],
)
def test_hash_on_and_sticky_accepted(proxy: Any, options: dict[str, Any]) -> None:
    app = proxy([URL], **options)
    close = getattr(app, "close", None)
    if close is not None:
        close()


@pytest.mark.parametrize("proxy", [ProxyApp, WSGIProxy])
@pytest.mark.parametrize("sticky", ["clientlb", True, {"name": "x"}])
def test_sticky_takes_a_sticky_cookie(proxy: Any, sticky: object) -> None:
    with pytest.raises(ConfigError) as info:
        proxy([URL], sticky=sticky)
    assert info.value.field == "sticky"
