"""Upstream and pool configuration: every bad value is a ConfigError naming the field."""

from __future__ import annotations

import math
from typing import Any

import pytest

import clientlb
from clientlb import (
    ALGORITHMS,
    ConfigError,
    OutlierDetection,
    Pool,
    RetryBudget,
    RetryPolicy,
    Upstream,
)

from .helpers import make_pool


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert clientlb.ConfigError is ConfigError


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("localhost:8000", ["scheme"]),
        ("10.0.0.1:8000", ["scheme"]),
        ("ftp://files.example:21", ["scheme"]),
        ("http://", ["missing host"]),
        ("http://:8000", ["missing host"]),
        ("http://api.example/?debug=1", ["query"]),
        ("http://api.example?x", ["query"]),
        ("http://api.example/#top", ["fragment"]),
        ("http://user:secret@api.example", ["credentials"]),
        ("http://user@api.example", ["credentials"]),
        ("http://api.example:0", ["port"]),
        ("http://api.example:99999", ["port"]),
        ("http://api.example:http", ["invalid"]),
        ("http://[::zz]:8000", ["invalid"]),
        ('http://a"b:8000', ["invalid host"]),
        ("http://-edge.example:8000", ["invalid host"]),
        ("http://a%20b:8000", ["invalid host"]),
        ("", ["non-empty"]),
    ],
)
def test_bad_url_is_rejected_naming_field_and_value(url: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        Upstream(url)
    message = str(info.value)
    assert info.value.field == "url"
    assert message.startswith("url: ")
    assert repr(url) in message
    for word in words:
        assert word in message.lower()


def test_non_string_url_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^url: .*8000"):
        Upstream(8000)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [0, -1, -0.5, math.nan, math.inf, True, False, "2", None])
def test_bad_weight_is_rejected_naming_field_and_value(weight: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Upstream("http://10.0.0.1:8000", weight=weight)
    assert info.value.field == "weight"
    assert str(info.value).startswith("weight: ")
    assert repr(weight) in str(info.value)
    assert "http://10.0.0.1:8000" in str(info.value)


@pytest.mark.parametrize("weight", [1, 2, 0.5, 1e6])
def test_positive_weights_are_accepted(weight: float) -> None:
    assert Upstream("http://10.0.0.1", weight=weight).weight == weight


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "prefix", "key"),
    [
        ("http://h:8000/v2/", "http", "h", 8000, "/v2", "http://h:8000/v2"),
        ("http://h:8000/api/v2", "http", "h", 8000, "/api/v2", "http://h:8000/api/v2"),
        ("http://h", "http", "h", 80, "", "http://h:80"),
        ("https://h", "https", "h", 443, "", "https://h:443"),
        ("https://h/", "https", "h", 443, "", "https://h:443"),
        ("HTTP://Api.Example:81", "http", "api.example", 81, "", "http://api.example:81"),
        ("http://[::1]:8000", "http", "::1", 8000, "", "http://[::1]:8000"),
        ("https://[2001:db8::7]", "https", "2001:db8::7", 443, "", "https://[2001:db8::7]:443"),
    ],
)
def test_url_parts(url: str, scheme: str, host: str, port: int, prefix: str, key: str) -> None:
    up = Upstream(url)
    assert (up.scheme, up.host, up.port, up.prefix, up.key) == (scheme, host, port, prefix, key)
    assert up.url == url


def test_ipv6_netloc_keeps_brackets() -> None:
    assert Upstream("http://[::1]:8000").netloc == "[::1]:8000"
    assert Upstream("http://10.0.0.1").netloc == "10.0.0.1:80"


def test_equivalent_urls_are_the_same_upstream() -> None:
    assert Upstream("http://h") == Upstream("http://H:80/")
    assert hash(Upstream("http://h")) == hash(Upstream("http://h:80"))
    assert Upstream("http://h:8000/v1") != Upstream("http://h:8000/v2")


def test_empty_pool_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^upstreams: .*at least one"):
        Pool([])


def test_empty_pool_is_allowed_on_request() -> None:
    pool = make_pool([], allow_empty=True)
    assert len(pool) == 0


def test_a_single_url_string_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^upstreams: .*list"):
        Pool("http://10.0.0.1:8000")


@pytest.mark.parametrize(
    "second",
    ["http://10.0.0.1:8000", "HTTP://10.0.0.1:8000/", Upstream("http://10.0.0.1:8000", weight=3)],
)
def test_duplicate_upstream_is_rejected(second: str | Upstream) -> None:
    with pytest.raises(ConfigError) as info:
        Pool(["http://10.0.0.1:8000", second])
    assert info.value.field == "upstreams"
    assert "duplicate" in str(info.value)
    assert "10.0.0.1:8000" in str(info.value)


def test_standby_equal_to_a_primary_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        Pool(["http://10.0.0.1:8000"], standbys=["http://10.0.0.1:8000/"])
    assert info.value.field == "standbys"
    assert "http://10.0.0.1:8000" in str(info.value)
    assert "primary and a standby" in str(info.value)


def test_bad_url_inside_a_pool_names_the_list() -> None:
    with pytest.raises(ConfigError) as info:
        Pool(["http://10.0.0.1:8000"], standbys=["ftp://10.0.0.2"])
    assert info.value.field == "standbys"
    assert "ftp://10.0.0.2" in str(info.value)


def test_non_url_entry_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^upstreams: .*42"):
        Pool([42])  # type: ignore[list-item]


def test_unknown_algorithm_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        Pool(["http://10.0.0.1"], algorithm="fastest")
    message = str(info.value)
    assert info.value.field == "algorithm"
    assert "'fastest'" in message
    for name in ALGORITHMS:
        assert name in message


def test_algorithm_names_are_the_contract() -> None:
    assert set(ALGORITHMS) == {
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "least_response_time",
        "ip_hash",
        "random",
        "power_of_two",
        "peak_ewma",
        "consistent_hash",
    }
    for name, cls in ALGORITHMS.items():
        assert make_pool(["http://10.0.0.1"], name).algorithm.name == name
        assert cls.name == name


def test_algorithm_of_wrong_type_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^algorithm: "):
        Pool(["http://10.0.0.1"], algorithm=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"slow_start": -1}, "slow_start"),
        ({"slow_start": math.nan}, "slow_start"),
        ({"slow_start_min_share": 0}, "slow_start_min_share"),
        ({"fail_back_after": -5}, "fail_back_after"),
        ({"failure_penalty": math.inf}, "failure_penalty"),
        ({"outlier": "strict"}, "outlier"),
        ({"retry": 3}, "retry"),
    ],
)
def test_bad_pool_option_names_field_and_value(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Pool(["http://10.0.0.1"], **kwargs)
    assert info.value.field == field
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: OutlierDetection(consecutive_local_failures=0), "consecutive_local_failures"),
        (lambda: OutlierDetection(consecutive_gateway_errors=True), "consecutive_gateway_errors"),
        (lambda: OutlierDetection(base_ejection_time=0), "base_ejection_time"),
        (lambda: OutlierDetection(max_ejected_share=1.5), "max_ejected_share"),
        (lambda: RetryPolicy(max_retries=-1), "max_retries"),
        (lambda: RetryPolicy(max_retries=1.5), "max_retries"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(retry_on_status=frozenset({999})), "retry_on_status"),
        (lambda: RetryBudget(ratio=-0.1), "retry_budget.ratio"),
        (lambda: RetryBudget(window=0), "retry_budget.window"),
    ],
)
def test_bad_policy_names_field(build: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.field == field
