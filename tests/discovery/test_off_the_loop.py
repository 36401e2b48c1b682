"""Discovery keeps large answers off the event loop: parsing runs in worker
threads, and a large change is applied in steps with the loop running between."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from clientlb import Pool, Upstream
from clientlb._background import AsyncBackground
from clientlb.discovery import DNS, Endpoints, Etcd, Feed, File, Provider, _base, _dns, _file
from clientlb.discovery._etcd import EtcdView

from .services import Dnsmasq, EtcdServer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def recording(calls: list[int], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, noting the thread of each call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(threading.get_ident())
        return fn(*args, **kwargs)

    return wrapper


async def until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


async def test_a_file_is_parsed_in_a_worker_thread_while_the_loop_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "upstreams.toml"
    path.write_text('upstreams = ["http://a:1", "http://b:1"]\n')
    entered, release = threading.Event(), threading.Event()
    threads: list[int] = []
    parse = _file.parse_document

    def slow_parse(data: bytes, fmt: str) -> Endpoints:
        threads.append(threading.get_ident())
        entered.set()
        release.wait(10)  # a parse that takes as long as the test wants
        return parse(data, fmt)

    monkeypatch.setattr(_file, "parse_document", slow_parse)
    pool = Pool(["http://static:1"])
    async with AsyncBackground(pool, discovery=File(path, interval=0.01)):
        await anyio.to_thread.run_sync(entered.wait, 10)
        for _ in range(5):  # the loop runs, and the pool serves, meanwhile
            await anyio.sleep(0)
            pool.pick().finish()
        release.set()
        await until(lambda: len(pool) == 2, "the file applied")
    assert threads and threading.get_ident() not in threads


async def test_a_large_change_is_prepared_off_the_loop_and_applied_in_steps() -> None:
    pool = Pool([f"http://old{i}:1" for i in range(1000)])
    prepared: list[int] = []
    pool.update_steps = recording(prepared, pool.update_steps)  # type: ignore[method-assign]
    feed = Feed(Provider(), pool)
    new = Endpoints(tuple(Upstream(f"http://new{i}:1") for i in range(3000)))
    ticks, done = 0, False

    async def tick() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await feed.apublish(new)
        done = True
    assert prepared and threading.get_ident() not in prepared
    assert ticks >= (3000 + 1000) // _base.UPDATE_STEP  # the loop ran between steps
    assert {m.upstream.url for m in pool.members} == {u.url for u in new.primaries}
    assert feed.state == "ok" and feed.applied is new


async def test_dns_answers_are_parsed_in_a_worker_thread(
    dnsmasq: Dnsmasq, monkeypatch: pytest.MonkeyPatch
) -> None:
    dnsmasq.set_hosts({"svc.test": ["127.0.0.41", "127.0.0.42"]})
    dnsmasq.start()
    threads: list[int] = []
    monkeypatch.setattr(_dns, "_reply", recording(threads, _dns._reply))
    pool = Pool(allow_empty=True)
    provider = DNS("svc.test", 80, nameserver=dnsmasq.nameserver, min_ttl=0.05)
    async with AsyncBackground(pool, discovery=provider):
        await until(lambda: len(pool) == 2, "the first answer")
    assert threads and threading.get_ident() not in threads


async def test_etcd_answers_are_parsed_in_a_worker_thread(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    etcd.put("/svc/a", {"url": "http://127.0.0.1:1"})
    threads: list[int] = []
    monkeypatch.setattr(EtcdView, "load", recording(threads, EtcdView.load))
    monkeypatch.setattr(EtcdView, "apply", recording(threads, EtcdView.apply))
    pool = Pool(allow_empty=True)
    async with AsyncBackground(pool, discovery=Etcd(etcd.url, "/svc/")):
        await until(lambda: len(pool) == 1, "the range")
        ranges = len(threads)
        await anyio.to_thread.run_sync(etcd.put, "/svc/b", {"url": "http://127.0.0.1:2"})
        await until(lambda: len(pool) == 2, "the watch")
    assert len(threads) > ranges and threading.get_ident() not in threads
