"""A pool shared by several owners is checked and fed by one of them at a time,
and another takes over when that one closes."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

import clientlb
from clientlb import HealthCheck, Pool
from clientlb._proxy import WSGIProxy
from clientlb.discovery import File

from ..replicas import Replica
from ..waiting import await_for, wait_for
from .conftest import background_threads

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaked_threads")]

FAST = HealthCheck(interval=0.03, timeout=1.0, rise=1, fall=1)


@pytest.fixture(autouse=True)
def quick_takeover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clientlb._background.TAKEOVER_INTERVAL", 0.05)


def named(name: str) -> list[str]:
    return [t.name for t in background_threads() if t.name == name]


def test_another_owner_takes_over_the_checks(replicas: list[Replica]) -> None:
    r0 = replicas[0]
    pool = Pool([r.url for r in replicas], health_check=FAST)
    first = clientlb.BalancingTransport(pool)
    second = WSGIProxy(pool=pool)
    try:
        assert named("clientlb-health") == ["clientlb-health"]  # checked once
        assert named("clientlb-standby") == ["clientlb-standby"]
        wait_for(lambda: r0.count(path="/health") >= 2, what="the first owner's checks")
        first.close()
        # The checks go on: a sick replica is still taken out.
        r0.health_status = 503
        wait_for(lambda: pool.members[0].health.value == "down", what="the second owner's checks")
        assert named("clientlb-health") == ["clientlb-health"]
        wait_for(lambda: named("clientlb-standby") == [], what="the standby thread to end")
    finally:
        first.close()
        second.close()


def test_a_standing_by_owner_closes_without_disturbing_the_runner(
    replicas: list[Replica],
) -> None:
    r0 = replicas[0]
    pool = Pool([r.url for r in replicas], health_check=FAST)
    runner = clientlb.BalancingTransport(pool)
    standby = clientlb.BalancingTransport(pool)
    try:
        standby.close()
        assert named("clientlb-standby") == []
        seen = r0.count(path="/health")
        wait_for(lambda: r0.count(path="/health") >= seen + 2, what="the runner's checks")
    finally:
        runner.close()
        standby.close()
    assert pool.claim_runner(object())  # nobody holds the pool any more


@pytest.mark.anyio
async def test_an_async_owner_takes_over_from_a_sync_one(replicas: list[Replica]) -> None:
    r1 = replicas[1]
    pool = Pool([r.url for r in replicas], health_check=FAST)
    sync_owner = clientlb.BalancingTransport(pool)
    try:
        async with httpx.AsyncClient(transport=clientlb.AsyncBalancingTransport(pool)) as client:
            assert named("clientlb-health") == ["clientlb-health"]
            sync_owner.close()
            assert named("clientlb-health") == []
            r1.health_status = 500
            await await_for(lambda: pool.members[1].health.value == "down", what="takeover")
            assert (await client.get("http://svc/")).status_code == 200
    finally:
        sync_owner.close()


def test_discovery_is_taken_over_too(tmp_path: Path, replicas: list[Replica]) -> None:
    path = tmp_path / "upstreams.toml"

    def publish(*chosen: Replica) -> None:
        tmp = tmp_path / "upstreams.toml.tmp"
        entries = ", ".join(f'"{r.url}"' for r in chosen)
        tmp.write_text(f"upstreams = [{entries}]\n")
        os.replace(tmp, path)

    publish(replicas[0])
    pool = Pool(discovery=File(path, interval=0.02))
    first = clientlb.BalancingTransport(pool)
    second = clientlb.BalancingTransport(pool)
    try:
        assert len(pool) == 1
        first.close()
        publish(replicas[0], replicas[1])
        wait_for(lambda: len(pool) == 2, what="the second owner's discovery")
        with httpx.Client(transport=second) as client:
            assert client.get("http://svc/").status_code == 200
    finally:
        first.close()
        second.close()


class CountingFile(File):
    """A File provider that counts the interruptions it is sent."""

    interrupts = 0

    def interrupt(self) -> None:
        self.interrupts += 1
        super().interrupt()


def test_closing_a_standing_by_owner_leaves_the_runners_discovery_alone(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    path = tmp_path / "upstreams.toml"
    path.write_text(f'upstreams = ["{replicas[0].url}"]\n')
    provider = CountingFile(path, interval=0.02)
    pool = Pool(discovery=provider)
    runner = clientlb.BalancingTransport(pool)
    standby = clientlb.BalancingTransport(pool)
    try:
        standby.close()
        assert provider.interrupts == 0  # shared with the runner, which still uses it
        runner.close()
        assert provider.interrupts == 1
    finally:
        runner.close()
        standby.close()
