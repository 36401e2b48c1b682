"""The providers' decisions, without any registry: answers in, decisions out."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from clientlb import Pool, Upstream
from clientlb.discovery import DNS, Endpoints, Etcd, Feed, InvalidAnswer, Provider
from clientlb.discovery._base import parse_entry
from clientlb.discovery._dns import Query, Reply
from clientlb.discovery._etcd import EtcdView, Resync, WatchFailed, prefix_end


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kv(key: str, value: object) -> dict[str, str]:
    raw = value if isinstance(value, str) else json.dumps(value)
    return {"key": b64(key), "value": b64(raw)}


def drive(
    provider: DNS, replies: dict[tuple[str, str], Reply]
) -> tuple[Endpoints, float, list[Query]]:
    flow, asked = provider._flow(), []
    try:
        query = next(flow)
        while True:
            asked.append(query)
            query = flow.send(replies.get((query.name, query.rdtype), Reply()))
    except StopIteration as done:
        endpoints, ttl = done.value
    return endpoints, ttl, asked


def test_endpoints_are_deduplicated_with_primaries_first() -> None:
    a, b = Upstream("http://a:1"), Upstream("http://b:1", 2)
    e = Endpoints.of([(b, True), (a, True), (b, False), (a, True)])
    assert e.primaries == (b,) and e.standbys == (a,)
    assert e.same_as(Endpoints((b,), (a,)))
    assert not e.same_as(Endpoints((Upstream("http://b:1", 3),), (a,)))
    assert not Endpoints()


def test_an_entry_may_carry_its_connection_limit() -> None:
    upstream, standby = parse_entry({"url": "http://a:1", "max_connections": 8}, "key")
    assert upstream.max_connections == 8 and not standby
    limited = Endpoints((upstream,), ())
    assert not limited.same_as(Endpoints((Upstream("http://a:1"),), ()))  # a change to apply
    pool = Pool(["http://a:1"])
    pool.update(limited.primaries)
    assert pool.snapshot()["upstreams"][0]["max_connections"] == 8


@pytest.mark.parametrize(
    "value",
    [
        None,
        5,
        {"url": "ftp://x"},
        {"url": "http://a:1", "weight": 0},
        {"url": "http://a:1", "tier": "x"},
        {"url": "http://a:1", "color": "red"},
        {"url": "http://a:1", "max_connections": 0},
        {"weight": 1},
    ],
)
def test_bad_entries_are_invalid_answers(value: object) -> None:
    with pytest.raises(InvalidAnswer):
        parse_entry(value, "key")


def test_feed_keeps_the_last_good_set_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    provider = Provider(min_backoff=1, max_backoff=8)
    pool = Pool(["http://static:1"], allow_empty=True)
    feed = Feed(provider, pool)
    feed.publish(Endpoints())  # an empty first answer does not empty the pool
    assert [m.upstream.url for m in pool.members] == ["http://static:1"]
    good = Endpoints((Upstream("http://a:1"),))
    feed.publish(good)
    assert [m.upstream.url for m in pool.members] == ["http://a:1"]
    delays = [feed.failed(OSError("down")) for _ in range(6)]
    assert all(0.5 <= d <= 1 for d in delays[:1]) and all(d <= 8 for d in delays)
    assert 4 <= delays[-1] <= 8
    assert [m.upstream.url for m in pool.members] == ["http://a:1"]
    feed.publish(good)
    assert feed.failures == 0 and feed.state == "ok"
    assert [r.getMessage().split(": ", 1)[1][:20] for r in caplog.records] == [
        "registry empty: answ",
        "registry unreachable",
    ]


def test_dns_a_and_aaaa() -> None:
    provider = DNS("svc.test", 8080)
    endpoints, ttl, asked = drive(
        provider,
        {
            ("svc.test", "A"): Reply(("10.0.0.1", "10.0.0.2"), 30.0),
            ("svc.test", "AAAA"): Reply(("fd00::1",), 10.0),
        },
    )
    assert [u.url for u in endpoints.primaries] == [
        "http://10.0.0.1:8080",
        "http://10.0.0.2:8080",
        "http://[fd00::1]:8080",
    ]
    assert ttl == 10.0 and provider._delay(endpoints, ttl) == 10.0
    assert [q.rdtype for q in asked] == ["A", "AAAA"]
    assert provider._delay(endpoints, 0.0) == provider.min_ttl
    assert provider._delay(endpoints, 1e9) == provider.max_ttl
    assert provider._delay(Endpoints(), 30.0) == provider.min_ttl
    assert DNS("s", scheme="https")._flow is not None


def test_dns_srv_tiers_weights_and_lookups() -> None:
    provider = DNS("_http._tcp.svc", srv=True)
    records = (("a", 81, 10, 0), ("b", 82, 10, 3), ("c", 83, 20, 0), ("", 84, 0, 1))
    endpoints, ttl, asked = drive(
        provider,
        {
            ("_http._tcp.svc", "SRV"): Reply(records, 60.0, {"a": ("10.0.0.1",)}),
            ("b", "A"): Reply(("10.0.0.2",), 5.0),
            ("c", "AAAA"): Reply(("fd00::3",), 7.0),
        },
    )
    assert [(u.url, u.weight) for u in endpoints.primaries] == [
        ("http://10.0.0.1:81", 0.01),
        ("http://10.0.0.2:82", 3),
    ]
    assert [(u.url, u.weight) for u in endpoints.standbys] == [("http://[fd00::3]:83", 1)]
    assert ttl == 5.0
    assert ("a", "A") not in [(q.name, q.rdtype) for q in asked]  # from the additional section


def test_etcd_view_follows_range_and_watch(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="clientlb.discovery")
    view = EtcdView("/svc/")
    assert view.range_request() == {"key": b64("/svc/"), "range_end": b64("/svc0")}
    view.load(
        {
            "header": {"revision": "7"},
            "kvs": [
                kv("/svc/a", {"url": "http://a:1"}),
                kv("/svc/b", "http://b:1"),
                kv("/svc/c", "{broken"),
            ],
        }
    )
    assert view.revision == 7 and view.watch_request()["create_request"]["start_revision"] == "8"
    assert [u.url for u in view.endpoints().primaries] == ["http://a:1", "http://b:1"]

    def message(*events: dict[str, object], revision: int = 9) -> dict[str, object]:
        return {"result": {"header": {"revision": str(revision)}, "events": list(events)}}

    assert not view.apply({"result": {"header": {"revision": "8"}, "created": True}})
    assert view.apply(message({"type": "DELETE", "kv": {"key": b64("/svc/b")}}))
    assert not view.apply(message({"kv": kv("/svc/a", {"url": "ftp://no"})}))  # keeps a
    assert view.apply(message({"kv": kv("/svc/d", {"url": "http://d:1", "tier": "standby"})}))
    endpoints = view.endpoints()
    assert [u.url for u in endpoints.primaries] == ["http://a:1"]
    assert [u.url for u in endpoints.standbys] == ["http://d:1"]
    assert view.revision == 9
    with pytest.raises(Resync):
        view.apply({"result": {"compact_revision": "5", "canceled": True}})
    with pytest.raises(WatchFailed):
        view.apply({"error": {"grpc_code": 14, "message": "transport is closing"}})
    with pytest.raises(InvalidAnswer):
        view.apply(["not", "an", "object"])
    with pytest.raises(InvalidAnswer):
        view.load({"kvs": []})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "/svc/c" in warnings[0] and "/svc/a" in warnings[1]


def test_prefix_end() -> None:
    assert prefix_end(b"/svc/") == b"/svc0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\x00"


def test_etcd_options() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        Etcd("127.0.0.1:2379", "/svc/")
    with pytest.raises(ValueError, match="prefix"):
        Etcd("http://127.0.0.1:2379", "")
    assert Etcd(["http://e1:2379/", "http://e2:2379"], "/p/").endpoints == [
        "http://e1:2379",
        "http://e2:2379",
    ]
