"""``Etcd`` against a real etcd, with real replicas taking traffic meanwhile."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from clientlb import BalancingTransport, Pool
from clientlb._background import Background
from clientlb.discovery import Etcd

from ..replicas import Replica
from ..waiting import wait_for
from .conftest import Runner, _threads
from .services import EtcdServer
from .test_file import tiers

pytestmark = pytest.mark.integration

PREFIX = "/services/users/"


class Traffic:
    """A client sending requests through the pool, in a thread, until stopped."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.sent = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic")

    def _run(self) -> None:
        with httpx.Client(
            transport=BalancingTransport(self.pool), base_url="http://users"
        ) as client:
            while not self._stop.is_set():
                try:
                    client.get("/work").raise_for_status()
                except Exception as exc:
                    self.errors.append(exc)
                self.sent += 1

    def advance(self, n: int = 30) -> None:
        """Wait until ``n`` more requests were sent."""
        target = self.sent + n
        wait_for(lambda: self.sent >= target, f"{n} more requests", timeout=10)

    @contextmanager
    def running(self) -> Iterator[Traffic]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)


def urls(pool: Pool) -> set[str]:
    primaries, standbys = tiers(pool)
    return {*primaries, *standbys}


def test_replicas_join_and_leave_under_traffic(
    etcd: EtcdServer, replicas: list[Replica], run_background: Runner
) -> None:
    r0, r1, r2 = replicas
    etcd.put(PREFIX + "r0", {"url": r0.url})
    etcd.put(PREFIX + "r1", {"url": r1.url, "weight": 1, "tier": "primary"})
    pool = Pool(allow_empty=True)
    provider = Etcd(etcd.url, PREFIX, min_backoff=0.05, max_backoff=0.2)
    with run_background(pool, discovery=provider):
        wait_for(lambda: urls(pool) == {r0.url, r1.url}, "the first range", timeout=5)
        with Traffic(pool).running() as traffic:
            traffic.advance()
            etcd.put(PREFIX + "r2", {"url": r2.url})  # joins
            wait_for(lambda: r2.url in urls(pool), "r2 to join", timeout=5)
            wait_for(lambda: r2.count(path="/work") > 0, "r2 to take traffic", timeout=5)

            etcd.delete(PREFIX + "r0")  # leaves
            wait_for(
                lambda: r0.url not in {m.upstream.url for m in pool.members}, "r0 to go", timeout=5
            )
            seen = r0.count()
            traffic.advance(60)
            assert r0.count() == seen
            r0.stop()

            with Replica("leased") as leased:  # a lease that is not kept alive expires
                etcd.put(PREFIX + "leased", {"url": leased.url}, lease=etcd.grant(1))
                wait_for(lambda: leased.url in urls(pool), "the leased replica to join", timeout=5)
                wait_for(
                    lambda: leased.count() > 0, "the leased replica to take traffic", timeout=5
                )
                wait_for(lambda: leased.url not in urls(pool), "the lease to expire", timeout=10)
                # Drained: a request picked just before the change may still land.
                gone = lambda: leased.url not in {m.upstream.url for m in pool.members}  # noqa: E731
                wait_for(gone, "the leased replica's last request to end", timeout=5)
                seen = leased.count()
                traffic.advance()
                assert leased.count() == seen
            traffic.advance()
    assert not traffic.errors
    assert urls(pool) == {r1.url, r2.url}


def test_etcd_outage_keeps_the_last_set_and_the_watch_resumes(
    etcd: EtcdServer,
    replicas: list[Replica],
    caplog: pytest.LogCaptureFixture,
    run_background: Runner,
) -> None:
    caplog.set_level(logging.INFO, logger="clientlb.discovery")
    r0, r1, r2 = replicas
    etcd.put(PREFIX + "r0", {"url": r0.url})
    etcd.put(PREFIX + "r1", {"url": r1.url})
    pool = Pool(allow_empty=True)
    provider = Etcd(etcd.url, PREFIX, min_backoff=0.02, max_backoff=0.1, timeout=1)
    with run_background(pool, discovery=provider):
        wait_for(lambda: urls(pool) == {r0.url, r1.url}, "the first range", timeout=5)
        with Traffic(pool).running() as traffic:
            etcd.stop()
            wait_for(
                lambda: provider.feed and provider.feed.failures >= 3, "failed retries", timeout=10
            )
            traffic.advance(60)
            assert urls(pool) == {r0.url, r1.url}

            etcd.start()
            wait_for(
                lambda: provider.feed and provider.feed.state == "ok",
                "the registry back",
                timeout=10,
            )
            etcd.put(PREFIX + "r2", {"url": r2.url, "tier": "standby"})
            etcd.delete(PREFIX + "r0")
            wait_for(
                lambda: tiers(pool) == ({r1.url: 1}, {r2.url: 1}),
                "changes after the outage",
                timeout=5,
            )
            traffic.advance()
    assert not traffic.errors
    messages = [r.getMessage() for r in caplog.records]
    # each distinct failure once (the watch cut, then refused connections), never per retry
    failures = [m.split("; keeping")[0] for m in messages if "registry unreachable" in m]
    assert 1 <= len(failures) == len(set(failures))
    assert sum("registry is back" in m for m in messages) == 1


def test_bad_values_keep_the_last_good_endpoint(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clientlb.discovery")
    etcd.put(PREFIX + "a", {"url": "http://127.0.0.1:1"})
    etcd.put(PREFIX + "junk", "not json {")
    etcd.put("/services/other/x", {"url": "http://127.0.0.1:9"})  # another prefix
    pool = Pool(allow_empty=True)
    provider = Etcd(etcd.url, PREFIX, min_backoff=0.02)
    with _threads(pool, discovery=provider):
        wait_for(lambda: urls(pool) == {"http://127.0.0.1:1"}, timeout=5)
        etcd.put(PREFIX + "a", {"url": "ftp://nope"})  # garbage: a's last value stays
        etcd.put(PREFIX + "b", {"url": "http://127.0.0.1:2", "tier": "standby"})
        wait_for(lambda: urls(pool) == {"http://127.0.0.1:1", "http://127.0.0.1:2"}, timeout=5)
        etcd.put(PREFIX + "a", {"url": "http://127.0.0.1:3", "weight": 2})
        wait_for(
            lambda: tiers(pool) == ({"http://127.0.0.1:3": 2}, {"http://127.0.0.1:2": 1}), timeout=5
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "junk" in warnings[0] and "/a" in warnings[1]


def test_close_interrupts_a_quiet_watch(etcd: EtcdServer) -> None:
    etcd.put(PREFIX + "a", {"url": "http://127.0.0.1:1"})
    pool = Pool(allow_empty=True)
    background = Background(pool, discovery=Etcd(etcd.url, PREFIX, watch_timeout=60))
    background.start()
    wait_for(lambda: len(pool) == 1, timeout=5)
    etcd.put(PREFIX + "b", {"url": "http://127.0.0.1:2"})
    wait_for(lambda: len(pool) == 2, "the watch", timeout=5)  # the watch is open and quiet now
    started = time.monotonic()
    background.close()
    assert time.monotonic() - started < 5.0  # not the 60 s watch timeout
    assert not [t for t in threading.enumerate() if t.name.startswith("clientlb")]
