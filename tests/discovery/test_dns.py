"""``DNS`` against a real dnsmasq on a loopback port."""

from __future__ import annotations

import logging
import sys

import pytest

from clientlb import ConfigError, Pool
from clientlb.discovery import DNS

from ..waiting import wait_for
from .conftest import Runner
from .services import Dnsmasq
from .test_file import tiers

pytestmark = pytest.mark.integration


def test_a_records_follow_the_zone(dnsmasq: Dnsmasq, run_background: Runner) -> None:
    dnsmasq.set_hosts({"svc.test": ["127.0.0.11", "127.0.0.12"]})
    dnsmasq.start()
    pool = Pool(allow_empty=True)
    provider = DNS("svc.test", 8080, nameserver=dnsmasq.nameserver, min_ttl=0.02)
    with run_background(pool, discovery=provider):
        first = {"http://127.0.0.11:8080": 1, "http://127.0.0.12:8080": 1}
        wait_for(lambda: tiers(pool) == (first, {}), "the first answer", timeout=5)
        dnsmasq.set_hosts({"svc.test": ["127.0.0.12", "127.0.0.13", "::1"]})
        later = {"http://127.0.0.12:8080": 1, "http://127.0.0.13:8080": 1, "http://[::1]:8080": 1}
        wait_for(lambda: tiers(pool) == (later, {}), "the new records", timeout=5)


def test_srv_records_give_ports_weights_and_tiers(dnsmasq: Dnsmasq, run_background: Runner) -> None:
    name = "_http._tcp.svc.test"
    dnsmasq.set_hosts(
        {"a.test": ["127.0.0.21"], "b.test": ["127.0.0.22"], "c.test": ["127.0.0.23"]}
    )
    dnsmasq.set_srv(
        [(name, "a.test", 8001, 0, 5), (name, "b.test", 8002, 0, 1), (name, "c.test", 8003, 1, 0)]
    )
    dnsmasq.start()
    pool = Pool(allow_empty=True)
    provider = DNS(name, nameserver=dnsmasq.nameserver, srv=True, min_ttl=0.02, min_backoff=0.02)
    with run_background(pool, discovery=provider):
        primaries = {"http://127.0.0.21:8001": 5, "http://127.0.0.22:8002": 1}
        wait_for(lambda: tiers(pool) == (primaries, {"http://127.0.0.23:8003": 1}), timeout=5)
        dnsmasq.set_srv([(name, "b.test", 9002, 0, 2)])  # a restart: a short outage too
        wait_for(lambda: tiers(pool) == ({"http://127.0.0.22:9002": 2}, {}), timeout=5)


def test_unreachable_nameserver_keeps_the_last_set(
    dnsmasq: Dnsmasq, run_background: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clientlb.discovery")
    dnsmasq.set_hosts({"svc.test": ["127.0.0.31"]})
    dnsmasq.start()
    pool = Pool(allow_empty=True)
    provider = DNS(
        "svc.test",
        80,
        nameserver=dnsmasq.nameserver,
        min_ttl=0.02,
        timeout=0.1,
        min_backoff=0.02,
        max_backoff=0.05,
    )
    with run_background(pool, discovery=provider):
        good = ({"http://127.0.0.31:80": 1}, {})
        wait_for(lambda: tiers(pool) == good, timeout=5)
        dnsmasq.stop()
        wait_for(lambda: provider.feed and provider.feed.failures >= 3, "failed lookups", timeout=5)
        assert tiers(pool) == good
        dnsmasq.set_hosts({"svc.test": ["127.0.0.32"]})
        dnsmasq.start()
        wait_for(lambda: tiers(pool) == ({"http://127.0.0.32:80": 1}, {}), timeout=5)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("registry is back" in m for m in messages) == 1


def test_dns_options_are_validated() -> None:
    for kwargs, field in [
        ({"nameserver": "dns.example"}, "nameserver"),
        ({"nameserver": "127.0.0.1:x"}, "nameserver"),
        ({"nameserver": "127.0.0.1:70000"}, "nameserver"),
        ({"port": 0}, "port"),
        ({"scheme": "ftp"}, "scheme"),
        ({"min_ttl": 10, "max_ttl": 1}, "max_ttl"),
    ]:
        with pytest.raises(ConfigError) as info:
            DNS("svc.test", **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
    assert DNS("s", nameserver="[::1]:5353").nameserver == ("::1", 5353)
    assert DNS("s", nameserver="::1").nameserver == ("::1", 53)


def test_missing_dnspython_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dns.resolver", None)
    with pytest.raises(ImportError, match=r"clientlb\[dns\]"):
        DNS("svc.test", 80)
