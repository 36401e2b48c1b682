"""Discovery says what it rejects: each distinct bad answer once (rate-limited),
and answers that list an upstream twice, or as both primary and standby."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clientlb import Pool, Upstream
from clientlb.discovery import DNS, Endpoints, Etcd, Feed, File, InvalidAnswer, Provider
from clientlb.discovery._base import LOG_INTERVAL
from clientlb.discovery._dns import Reply
from clientlb.discovery._etcd import EtcdView

from ..waiting import wait_for
from .conftest import Runner
from .services import Dnsmasq, EtcdServer
from .test_decisions import drive, kv
from .test_file import tiers, write


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="clientlb.discovery")
    return caplog


# -- the decisions ----------------------------------------------------------------------


def test_each_distinct_failure_is_logged_once_per_interval(
    logged: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    feed = Feed(Provider(), Pool(["http://a:1"]), clock=clock)
    for error in ("first", "first", "second", "first", "third", "second"):
        feed.failed(InvalidAnswer(error))
    assert [w.split("InvalidAnswer: ")[1] for w in warnings(logged)] == [
        "first; keeping the configured upstreams",
        "second; keeping the configured upstreams",
        "third; keeping the configured upstreams",
    ]
    assert all(r.name == "clientlb.discovery" for r in logged.records)
    clock.now += LOG_INTERVAL - 0.01
    feed.failed(InvalidAnswer("first"))
    assert len(warnings(logged)) == 3  # still within the interval
    clock.now += 0.01
    feed.failed(InvalidAnswer("first"))  # the interval is over: said again, with a count
    assert warnings(logged)[-1].endswith("(3 times more since it was last logged)")
    feed.failed(OSError("unreachable"))
    feed.publish(Endpoints((Upstream("http://b:1"),)))
    back = logged.records[-1].getMessage()
    assert "registry is back" in back and "1 repeated failures were not logged" in back
    feed.failed(InvalidAnswer("first"))  # a new incident: said at once
    assert warnings(logged)[-1].endswith("first; keeping 1 primaries, 0 standbys")


def test_an_unreachable_registry_is_told_by_its_error_not_its_timings(
    logged: pytest.LogCaptureFixture,
) -> None:
    feed = Feed(Provider(), Pool(["http://a:1"]), clock=Clock())
    for elapsed in ("0.201", "0.203", "0.2"):
        feed.failed(TimeoutError(f"The resolution lifetime expired after {elapsed} seconds"))
    feed.failed(ConnectionRefusedError("[Errno 111] Connection refused"))
    assert len(warnings(logged)) == 2
    assert "0.201 seconds" in warnings(logged)[0] and "refused" in warnings(logged)[1]


def test_endpoints_say_what_they_collapsed() -> None:
    a, b, c = Upstream("http://a:1"), Upstream("http://b:1", 2), Upstream("http://c:1")
    entries = [(a, False), (b, True), (a, False), (b, False), (Upstream("http://a:1", 5), False)]
    e = Endpoints.of([*entries, (c, True)], ["p0", "s0", "p1", "p2", "p3", "s1"])
    assert e.primaries == (a, Upstream("http://b:1")) and e.primaries[0].weight == 1
    assert e.standbys == (c,)
    assert e.duplicates == ("http://a:1 (p0, p1, p3)",)
    assert e.clashes == ("http://b:1 (s0, p2)",)
    assert Endpoints.of([(a, False), (a, False)]).duplicates == ("http://a:1 (entry 0, entry 1)",)
    assert e.same_as(Endpoints(e.primaries, e.standbys))  # the reports do not compare


def test_duplicates_are_reported_once_per_interval(logged: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    pool = Pool(["http://a:1"])
    feed = Feed(Provider(), pool, clock=clock)
    a, b = Upstream("http://a:1"), Upstream("http://b:1")
    answer = Endpoints.of([(a, False), (a, False), (b, False), (b, True)], ["x", "y", "z", "w"])
    for _ in range(3):  # a registry polled again and again gives the same answer
        feed.publish(answer)
    assert [w.split(": ", 1)[1] for w in warnings(logged)] == [
        "upstreams listed more than once, each used once (first entry): http://a:1 (x, y)",
        "upstreams listed as both primary and standby, used as primaries: http://b:1 (z, w)",
    ]
    assert [m.upstream.url for m in pool.members] == ["http://a:1", "http://b:1"]
    feed.publish(Endpoints((a, b)))  # fixed: said at once if it comes back
    feed.publish(answer)
    assert len(warnings(logged)) == 4
    feed.publish(answer)
    clock.now += LOG_INTERVAL
    feed.publish(answer)
    assert len(warnings(logged)) == 6
    assert warnings(logged)[-2].endswith("(x, y) (1 times more since it was last logged)")


def test_a_long_list_is_cut_short(logged: pytest.LogCaptureFixture) -> None:
    ups = [Upstream(f"http://h{i}:1") for i in range(15)]
    feed = Feed(Provider(), Pool(["http://a:1"]))
    feed.publish(Endpoints.of([(u, False) for u in ups * 2]))
    assert warnings(logged)[0].endswith("; and 5 more")


def test_dns_srv_records_giving_one_url_twice() -> None:
    provider = DNS("_http._tcp.svc", srv=True)
    records = (("a", 81, 20, 1), ("a", 81, 10, 7), ("b", 81, 10, 1), ("c", 82, 10, 1))
    endpoints, _, _ = drive(
        provider,
        {
            ("_http._tcp.svc", "SRV"): Reply(records, 60.0),
            ("a", "A"): Reply(("10.0.0.1",), 60.0),
            ("b", "A"): Reply(("10.0.0.1",), 60.0),  # the same address as a
            ("c", "A"): Reply(("10.0.0.3",), 60.0),
        },
    )
    assert [(u.url, u.weight) for u in endpoints.primaries] == [
        ("http://10.0.0.1:81", 7),  # the record of lowest priority decides
        ("http://10.0.0.3:82", 1),
    ]
    assert endpoints.standbys == ()
    assert endpoints.duplicates == ()
    assert endpoints.clashes == (  # in the order of preference
        "http://10.0.0.1:81 (SRV a:81 priority 10, SRV b:81 priority 10, SRV a:81 priority 20)",
    )


def test_etcd_keys_giving_one_url_twice() -> None:
    view = EtcdView("/svc/")
    view.load(
        {
            "header": {"revision": "3"},
            "kvs": [
                kv("/svc/b", {"url": "http://a:1", "weight": 2}),
                kv("/svc/a", {"url": "http://a:1", "weight": 3}),
                kv("/svc/c", {"url": "http://c:1", "tier": "standby"}),
                kv("/svc/d", {"url": "http://c:1"}),
            ],
        }
    )
    endpoints = view.endpoints()
    assert [(u.url, u.weight) for u in endpoints.primaries] == [
        ("http://a:1", 3),
        ("http://c:1", 1),
    ]
    assert endpoints.duplicates == ("http://a:1 (/svc/a, /svc/b)",)
    assert endpoints.clashes == ("http://c:1 (/svc/c, /svc/d)",)


# -- with the registries ----------------------------------------------------------------


def test_a_file_listing_upstreams_twice(
    tmp_path: Path, run_background: Runner, logged: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "upstreams.toml"
    write(
        path,
        'upstreams = ["http://a:1", {url = "http://a:1", weight = 4}, "http://b:1"]\n'
        'standbys = ["http://b:1", "http://s:1"]\n',
    )
    pool = Pool(allow_empty=True)
    provider = File(path, interval=0.01)
    with run_background(pool, discovery=provider):
        wait_for(lambda: tiers(pool) == ({"http://a:1": 1, "http://b:1": 1}, {"http://s:1": 1}))
        write(path, 'upstreams = ["http://b:1", "http://a:1", "http://a:1"]\n')  # another one
        wait_for(lambda: tiers(pool) == ({"http://a:1": 1, "http://b:1": 1}, {}))
    said = warnings(logged)
    assert said[0].endswith(
        "upstreams listed more than once, each used once (first entry): "
        "http://a:1 (upstreams[0], upstreams[1])"
    )
    assert said[1].endswith(
        "upstreams listed as both primary and standby, used as primaries: "
        "http://b:1 (upstreams[2], standbys[0])"
    )
    assert said[2].endswith("http://a:1 (upstreams[1], upstreams[2])")
    assert len(said) == 3


def test_dns_srv_records_listing_one_url_twice(
    dnsmasq: Dnsmasq, run_background: Runner, logged: pytest.LogCaptureFixture
) -> None:
    name = "_http._tcp.svc.test"
    dnsmasq.set_hosts({"a.test": ["127.0.0.51"], "b.test": ["127.0.0.51"]})
    dnsmasq.set_srv([(name, "a.test", 8001, 0, 1), (name, "b.test", 8001, 0, 1)])
    dnsmasq.start()
    pool = Pool(allow_empty=True)
    provider = DNS(name, nameserver=dnsmasq.nameserver, srv=True, min_ttl=0.02)
    with run_background(pool, discovery=provider):
        wait_for(lambda: tiers(pool) == ({"http://127.0.0.51:8001": 1}, {}))
        wait_for(lambda: provider.feed and provider.feed.answers >= 3, "more answers", timeout=5)
    said = warnings(logged)
    assert len(said) == 1, said  # answered again and again, said once
    assert said[0].endswith(
        "http://127.0.0.51:8001 (SRV a.test:8001 priority 0, SRV b.test:8001 priority 0)"
    )


def test_etcd_keys_listing_one_url_twice(
    etcd: EtcdServer, run_background: Runner, logged: pytest.LogCaptureFixture
) -> None:
    etcd.put("/svc/one", {"url": "http://127.0.0.1:1"})
    etcd.put("/svc/two", {"url": "http://127.0.0.1:1", "tier": "standby"})
    pool = Pool(allow_empty=True)
    with run_background(pool, discovery=Etcd(etcd.url, "/svc/")):
        wait_for(lambda: tiers(pool) == ({"http://127.0.0.1:1": 1}, {}))
        etcd.put("/svc/three", {"url": "http://127.0.0.1:3"})
        wait_for(lambda: len(pool) == 2, "the watch", timeout=5)
    said = warnings(logged)
    assert len(said) == 1, said
    assert said[0].endswith(
        "upstreams listed as both primary and standby, used as primaries: "
        "http://127.0.0.1:1 (/svc/one, /svc/two)"
    )
