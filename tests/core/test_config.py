"""Upstream and pool configuration: every bad value is a ConfigError naming the field."""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import types
import typing
from typing import Any

import pytest

import clientlb
from clientlb import (
    ALGORITHMS,
    ConfigError,
    HealthCheck,
    Lease,
    OutlierDetection,
    Pool,
    RetryBudget,
    RetryPolicy,
    Upstream,
)
from clientlb._core._policies import MAX_SECONDS
from clientlb._core._upstream import MAX_WEIGHT, MIN_WEIGHT

from .helpers import FakeClock, fast_algorithm, make_pool, member, urls
from .test_rotation import nginx_reference


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


# -- URLs: whitespace and control characters, path prefixes -----------------------

#: Characters ``urlsplit`` drops (tab, CR, LF) or keeps, that no URL may hold.
HIDDEN = [" ", "\t", "\n", "\r", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\xa0"]
HIDDEN += ["\u200b", "\u2028", "\ufeff"]


@pytest.mark.parametrize("char", HIDDEN, ids=repr)
@pytest.mark.parametrize(
    "template",
    [
        "{}http://h:8000",
        "http://h{}x:8000",
        "http://h:80{}00",
        "http://h:8000/v{}2",
        "http://h/v2{}",
    ],
)
def test_url_with_whitespace_or_control_character_is_rejected(template: str, char: str) -> None:
    url = template.format(char)
    with pytest.raises(ConfigError) as info:
        Upstream(url)
    assert info.value.field == "url"
    assert repr(url) in str(info.value)
    assert "whitespace or control character" in str(info.value)
    with pytest.raises(ConfigError) as in_pool:
        Pool(["http://10.0.0.1:8000", url])
    assert in_pool.value.field == "upstreams"
    assert repr(url) in str(in_pool.value)


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ("/v%zz", "escape"),
        ("/v%2", "escape"),
        ("/v%", "escape"),
        ("/caf\u00e9", "not allowed"),
        ("/a\\b", "not allowed"),
        ("/a<b>", "not allowed"),
        ('/a"b', "not allowed"),
        ("/a{b}", "not allowed"),
        ("/a|b", "not allowed"),
        ("/a^b", "not allowed"),
        ("/a`b", "not allowed"),
        ("/a[0]", "not allowed"),
    ],
)
def test_invalid_path_prefix_is_rejected(prefix: str, words: str) -> None:
    url = f"http://10.0.0.1:8000{prefix}"
    with pytest.raises(ConfigError) as info:
        Upstream(url)
    assert info.value.field == "url"
    assert repr(url) in str(info.value)
    assert "path prefix" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("prefix", ["/v%2F2", "/a-b._~!$&'()*+,;=:@", "/api/v2", "//x"])
def test_valid_path_prefix_is_kept(prefix: str) -> None:
    assert Upstream(f"http://10.0.0.1:8000{prefix}").prefix == prefix


# -- weights: a bounded range every algorithm handles -----------------------------


@pytest.mark.parametrize("weight", [0.000999, 1_000_001, 1e308, 10**400, 5e-324])
def test_weight_outside_the_range_is_rejected(weight: float) -> None:
    with pytest.raises(ConfigError) as info:
        Upstream("http://10.0.0.1:8000", weight=weight)
    assert info.value.field == "weight"
    assert repr(weight) in str(info.value) and "1,000,000" in str(info.value)


@pytest.mark.parametrize("weight", [MIN_WEIGHT, MAX_WEIGHT, 0.01, 65535])
def test_weights_at_the_ends_and_dns_srv_weights_are_accepted(weight: float) -> None:
    assert Upstream("http://10.0.0.1", weight=weight).weight == weight


def test_dns_srv_weights_map_inside_the_range() -> None:
    """SRV weights 0-65535 become upstream weights (0 as 0.01): all must construct."""
    from clientlb.discovery import DNS
    from clientlb.discovery._dns import Reply

    flow = DNS("_http._tcp.svc", srv=True)._flow()
    next(flow)
    records = (("a", 80, 1, 0), ("b", 80, 1, 65535), ("c", 80, 2, 0))
    with pytest.raises(StopIteration) as done:
        flow.send(Reply(records, 60.0, {"a": ("10.0.0.1",), "b": ("10.0.0.2",), "c": ("::3",)}))
    endpoints, _ = done.value.value
    weights = sorted(u.weight for u in (*endpoints.primaries, *endpoints.standbys))
    assert weights == [0.01, 1, 65535]
    assert all(MIN_WEIGHT <= w <= MAX_WEIGHT for w in weights)


def _drive(pool: Pool, clock: FakeClock, count: int) -> list[str]:
    """``count`` requests with distinct keys, eight in flight at a time, each
    answered 10 ms after it was sent; the URLs picked, in order."""
    out: list[str] = []
    held: list[Lease] = []
    for i in range(count):
        lease = pool.pick(f"client-{i}")
        out.append(lease.upstream.url)
        held.append(lease)
        if len(held) == 8:
            clock.advance(0.01)
            for lease in held:
                lease.responded(200)
                lease.finish()
            held.clear()
    return out


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_both_weight_extremes_in_one_pool(name: str) -> None:
    """The heaviest weight gets almost every request from the lightest (all of them
    but round robin's half, which ignores weights, and the one table slot Maglev
    gives every member); a retry that excludes it still reaches the light one."""
    heavy, light = urls(2)
    clock = FakeClock()
    pool = make_pool(
        [Upstream(heavy, weight=MAX_WEIGHT), Upstream(light, weight=MIN_WEIGHT)],
        fast_algorithm(name),
        clock=clock,
    )
    picked = _drive(pool, clock, 2000)
    if name == "round_robin":
        assert picked.count(heavy) == picked.count(light) == 1000
    else:
        assert picked.count(heavy) >= 1990
    if name == "weighted_round_robin":
        assert picked == [heavy] * 2000  # nginx's sequence: light's turn is 1e9 picks away
    lease = pool.pick("client-0", exclude={member(pool, heavy)})
    assert lease.upstream.url == light
    lease.finish()
    assert len(pool.snapshot()["upstreams"]) == 2


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_equal_weights_pick_the_same_at_either_end_as_at_one(name: str) -> None:
    """Scaling every weight to an end of the range changes no pick."""
    sequences = []
    for weight in (MIN_WEIGHT, 1, MAX_WEIGHT):
        clock = FakeClock()
        pool = make_pool(
            [Upstream(u, weight=weight) for u in urls(3)], fast_algorithm(name), clock=clock
        )
        sequences.append(_drive(pool, clock, 600))
    assert sequences[0] == sequences[1] == sequences[2]
    assert set(sequences[1]) == set(urls(3))


def test_mixed_extremes_follow_nginx_weighted_round_robin() -> None:
    weights = [MAX_WEIGHT, MIN_WEIGHT, 1.0, MAX_WEIGHT / 3]
    pool = make_pool(
        [Upstream(u, weight=w) for u, w in zip(urls(4), weights, strict=True)],
        "weighted_round_robin",
    )
    picked = []
    for _ in range(3000):
        lease = pool.pick()
        lease.finish()
        picked.append(urls(4).index(lease.upstream.url))
    assert picked == nginx_reference(weights, 3000)
    assert picked.count(0) == 2250 and picked.count(3) == 750


# -- every field's type, derived from the annotations ----------------------------


class _Thing:
    """Some object of no configuration type (with a stable repr for test ids)."""

    def __repr__(self) -> str:
        return "<thing>"


#: One value of each kind a user might pass by mistake.
CANDIDATES: list[Any] = [
    "x",
    "200",
    b"x",
    True,
    False,
    7,
    1.5,
    [200],
    {"a": 1},
    None,
    range(200, 300),
    RetryBudget(),
    _Thing(),
]


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` is of a type ``annotation`` allows (bools are not numbers)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(annotation)
    if origin in (frozenset, collections.abc.Iterable):
        return isinstance(value, list | tuple | set | frozenset | range)
    if origin is collections.abc.Callable:
        return callable(value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    raise AssertionError(f"no rule for {annotation!r}: add one")


def _wrong_values(hints: dict[str, Any], names: list[str]) -> list[tuple[str, Any]]:
    cases = [(n, v) for n in names for v in CANDIDATES if not _accepts(hints[n], v)]
    assert {n for n, _ in cases} == set(names)  # every field gets at least one
    return cases


POLICIES = (OutlierDetection, RetryBudget, RetryPolicy, HealthCheck, Upstream)
POLICY_CASES = [
    (cls, name, value)
    for cls in POLICIES
    for name, value in _wrong_values(
        typing.get_type_hints(cls), [f.name for f in dataclasses.fields(cls) if f.init]
    )
]


@pytest.mark.parametrize(
    ("cls", "name", "value"),
    POLICY_CASES,
    ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in POLICY_CASES],
)
def test_every_policy_field_refuses_a_wrong_type(cls: type, name: str, value: Any) -> None:
    kwargs: dict[str, Any] = {name: value}
    if cls is Upstream and name != "url":
        kwargs["url"] = "http://10.0.0.1:8000"
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert info.value.field.rpartition(".")[2] == name  # RetryBudget's: retry_budget.ratio
    assert repr(value) in str(info.value)


POOL_HINTS = typing.get_type_hints(Pool.__init__)
POOL_ARGS = [n for n in inspect.signature(Pool.__init__).parameters if n not in ("self",)]
POOL_CASES = _wrong_values(POOL_HINTS, [n for n in POOL_ARGS if POOL_HINTS[n] is not Any])


@pytest.mark.parametrize(("name", "value"), POOL_CASES, ids=[f"{n}={v!r}" for n, v in POOL_CASES])
def test_every_pool_argument_refuses_a_wrong_type(name: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"upstreams": ["http://10.0.0.1:8000"], name: value}
    with pytest.raises(ConfigError) as info:
        Pool(**kwargs)
    assert info.value.field == name
    if not isinstance(value, dict):  # a mapping is iterated: the error names its key
        assert repr(value) in str(info.value)


def test_the_compiled_half_of_a_pool_takes_no_user_input() -> None:
    # Picking is compiled in the compiled build, where a method's signature
    # checks its types before any ConfigError could name the field: only Pool's
    # own methods, which stay Python, may be public.
    from clientlb._core._picking import Picking

    assert Pool.__mro__[1] is Picking
    public = [n for n, v in vars(Picking).items() if callable(v) and not n.startswith("_")]
    assert public == []
    assert {"pick", "note_request", "latency_quantile"} <= set(vars(Pool))


@pytest.mark.parametrize("discovery", ["dns://users:8000", 7, [_Thing()], {"uri": "x"}])
def test_pool_discovery_must_be_providers(discovery: Any) -> None:
    with pytest.raises(ConfigError, match=r"^discovery: expected a discovery provider"):
        Pool(discovery=discovery)


def test_pool_discovery_iterator_is_kept_for_every_owner() -> None:
    from clientlb.discovery import File

    provider = File("/nonexistent.toml")
    assert Pool(discovery=iter([provider])).discovery == (provider,)
    assert Pool(discovery=provider).discovery is provider


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RetryPolicy(retry_on_status=503), "retry_on_status"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(retry_on_status="503"), "retry_on_status"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(retry_on_status=[True]), "retry_on_status"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(retry_on_status=[[503]]), "retry_on_status"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(retry_on_status=range(0, 10**12)), "retry_on_status"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(retry_non_idempotent=1), "retry_non_idempotent"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(budget={"ratio": 0.1}), "budget"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(backoff=MAX_SECONDS * 2), "backoff"),
        (lambda: RetryBudget(window=61), "retry_budget.window"),
        (lambda: HealthCheck(expected="200"), "expected"),  # type: ignore[arg-type]
        (lambda: HealthCheck(expected=[200, True]), "expected"),  # type: ignore[arg-type]
        (lambda: HealthCheck(expected={200: "ok"}), "expected"),  # type: ignore[arg-type]
        (lambda: HealthCheck(expected=range(200, 200)), "expected"),
        (lambda: HealthCheck(path="/he alth"), "path"),
        (lambda: HealthCheck(path="/health\r\nX: 1"), "path"),
        (lambda: HealthCheck(path="/health#x"), "path"),
        (lambda: HealthCheck(path="/h%zz"), "path"),
        (lambda: HealthCheck(path="/caf\u00e9"), "path"),
        (lambda: HealthCheck(interval=1e300), "interval"),
        (lambda: OutlierDetection(max_ejection_time=math.inf), "max_ejection_time"),
        (lambda: OutlierDetection(base_ejection_time=MAX_SECONDS + 1), "base_ejection_time"),
        (lambda: Pool(["http://10.0.0.1"], failure_penalty=1e300), "failure_penalty"),
        (lambda: Pool(["http://10.0.0.1"], standbys=7), "standbys"),  # type: ignore[arg-type]
        (lambda: Pool(7), "upstreams"),  # type: ignore[arg-type]
    ],
)
def test_bad_policy_value_names_field_and_value(build: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.field == field


def test_valid_policy_values_keep_their_meaning() -> None:
    statuses: Any = [500, 503]  # a list or a range, as a user may give
    assert RetryPolicy(retry_on_status=statuses).retry_on_status == frozenset({500, 503})
    statuses = range(500, 504)
    assert RetryPolicy(retry_on_status=statuses).retry_on_status == frozenset(statuses)
    assert RetryPolicy(retry_on_status=frozenset()).retry_on_status == frozenset()
    assert RetryPolicy(budget=None).budget is None
    assert RetryBudget(window=60).window == 60
    assert HealthCheck(path="/health?full=1&x=%2F").path == "/health?full=1&x=%2F"
    assert HealthCheck(expected=range(200, 300)).expected == range(200, 300)
    assert HealthCheck(interval=MAX_SECONDS).interval == MAX_SECONDS
    assert Pool(["http://10.0.0.1"], slow_start=MAX_SECONDS).slow_start == MAX_SECONDS
