"""Sticky pins, sans-IO: tokens both ways, and ``Pool.pick(prefer=...)`` honouring
a pin only while its upstream may serve."""

from __future__ import annotations

import pytest

from clientlb import ConfigError, OutlierDetection, Pool, StickyCookie
from clientlb._core import AttemptPlan, Outcome, Pins

from .helpers import FakeClock, fail, make_pool, state, urls

SECRET = "0123456789abcdef-secret"


def pinned_pick(pool: Pool, pins: Pins, url: str, **kwargs: object) -> str:
    """Where a request carrying ``url``'s token goes (the lease is settled)."""
    token = pins.token(next(m.upstream for m in pool.members if m.url == url))
    lease = pool.pick(prefer=pins.pinned(token), **kwargs)  # type: ignore[arg-type]
    lease.finish(Outcome.SUCCESS)
    return lease.upstream.url


def test_a_token_names_its_upstream_and_not_its_address() -> None:
    pool = make_pool(urls(3))
    pins = Pins(StickyCookie(secret=SECRET), pool)
    tokens = {m.url: pins.token(m.upstream) for m in pool.members}
    assert len(set(tokens.values())) == 3
    for url, token in tokens.items():
        assert pins.pinned(token) == next(m.upstream.key for m in pool.members if m.url == url)
        host = url.split("//")[1].split(":")[0]
        assert host not in token and token.isascii() and ";" not in token


def test_tokens_agree_across_processes_only_with_one_secret() -> None:
    ups = urls(3)
    shared = [Pins(StickyCookie(secret=SECRET), make_pool(ups)) for _ in range(2)]
    other = Pins(StickyCookie(secret=SECRET + "!"), make_pool(ups))
    for m in make_pool(ups).members:
        assert shared[0].token(m.upstream) == shared[1].token(m.upstream)
        assert other.pinned(shared[0].token(m.upstream)) is None


@pytest.mark.parametrize("token", [None, "", "garbage", "x" * 22, "x" * 4096, "é" * 22])
def test_garbage_and_forged_tokens_pin_nothing(token: str | None) -> None:
    pins = Pins(StickyCookie(), make_pool(urls(3)))
    assert pins.pinned(token) is None


def test_a_pin_holds_against_the_algorithm() -> None:
    pool = make_pool(urls(3))  # round robin would move on every request
    pins = Pins(StickyCookie(), pool)
    target = urls(3)[1]
    assert {pinned_pick(pool, pins, target) for _ in range(20)} == {target}


def test_ejected_draining_down_and_removed_upstreams_lose_their_pins() -> None:
    ups = urls(4)
    pool = make_pool(ups, outlier=OutlierDetection(consecutive_local_failures=1))
    pins = Pins(StickyCookie(), pool)
    tokens = {m.url: pins.token(m.upstream) for m in pool.members}
    fail(pool, ups[0], 1)
    assert state(pool, ups[0]) == "ejected"
    pool.drain(ups[1])
    pool.report_check(ups[2], False)
    for url in ups[:3]:
        lease = pool.pick(prefer=pins.pinned(tokens[url]))
        lease.finish(Outcome.SUCCESS)
        assert lease.upstream.url == ups[3], url
    pool.report_check(ups[2], True)
    pool.remove(ups[3])
    lease = pool.pick(prefer=pins.pinned(tokens[ups[3]]))
    lease.finish(Outcome.SUCCESS)
    assert lease.upstream.url == ups[2]  # the only one left that serves


def test_a_standby_pin_fails_back_to_the_primaries() -> None:
    clock = FakeClock()
    pool = make_pool(urls(1), clock=clock, standbys=urls(1, port=9000), outlier=None)
    pins = Pins(StickyCookie(), pool)
    standby = urls(1, port=9000)[0]
    pool.report_check(urls(1)[0], False)  # the primary is down: the standby serves
    assert pinned_pick(pool, pins, standby) == standby
    pool.report_check(urls(1)[0], True)
    assert pinned_pick(pool, pins, standby) == urls(1)[0]


def test_a_pin_is_ignored_in_panic_and_when_excluded() -> None:
    ups = urls(2)
    pool = make_pool(ups, outlier=OutlierDetection(consecutive_local_failures=1))
    pins = Pins(StickyCookie(), pool)
    token = pins.token(pool.members[0].upstream)
    lease = pool.pick(prefer=pins.pinned(token), exclude=[pool.members[0]])
    lease.finish(Outcome.SUCCESS)
    assert lease.upstream.url == ups[1]
    fail(pool, ups[0], 1)
    fail(pool, ups[1], 1)  # both out: panic balances over both, as without a pin
    assert pool.panicking
    assert {pinned_pick(pool, pins, ups[0]) for _ in range(4)} == set(ups)


def test_a_plan_pins_its_first_attempt_only() -> None:
    ups = urls(3)
    pool = make_pool(ups, outlier=None)
    pins = Pins(StickyCookie(), pool)
    pin = pins.pinned(pins.token(pool.members[2].upstream))
    plan = AttemptPlan(pool, "GET", pin=pin)
    first = plan.first()
    assert first.upstream.url == ups[2]
    first.finish(Outcome.CONNECT_FAILURE)
    assert plan.retry_after(Outcome.CONNECT_FAILURE, replayable=True)
    retry = plan.next()
    assert retry.upstream.url != ups[2]
    retry.finish(Outcome.SUCCESS)


def test_set_cookie_attributes() -> None:
    pool = make_pool(urls(1))
    plain = Pins(StickyCookie(name="srv"), pool)
    assert plain.set_cookie("t") == "srv=t; Path=/; HttpOnly; SameSite=Lax"
    full = Pins(StickyCookie(max_age=3600, secure=True, path="/app"), pool)
    assert full.set_cookie("t") == (
        "clientlb=t; Path=/app; Max-Age=3600; HttpOnly; SameSite=Lax; Secure"
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "sticky.name"),
        ({"name": "a b"}, "sticky.name"),
        ({"name": "a;b"}, "sticky.name"),
        ({"name": 3}, "sticky.name"),
        ({"secret": "short"}, "sticky.secret"),
        ({"secret": 12345678901234567890}, "sticky.secret"),
        ({"max_age": 0}, "sticky.max_age"),
        ({"max_age": 1.5}, "sticky.max_age"),
        ({"max_age": True}, "sticky.max_age"),
        ({"secure": "yes"}, "sticky.secure"),
        ({"path": "app"}, "sticky.path"),
        ({"path": "/a;b"}, "sticky.path"),
    ],
)
def test_bad_sticky_cookie_settings(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        StickyCookie(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_the_secret_stays_out_of_the_repr() -> None:
    assert SECRET not in repr(StickyCookie(secret=SECRET))
