"""Background runners start what they should and leave nothing behind."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from clientlb import ConfigError, Pool
from clientlb._background import AsyncBackground, Background
from clientlb._core import HealthCheck, OutlierDetection
from clientlb.discovery import File

from ..waiting import await_for, wait_for
from .conftest import background_threads

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaked_threads")]


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    """A loopback server that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_close_stops_and_joins_every_thread(silent_upstream: str, tmp_path: Path) -> None:
    path = tmp_path / "up.toml"
    path.write_text(f'upstreams = ["{silent_upstream}"]\n')
    pool = Pool(allow_empty=True)
    check = HealthCheck(interval=0.05, timeout=0.3, fall=1)
    background = Background(pool, health_check=check, discovery=File(path, interval=0.02))
    background.start()
    assert sorted(t.name.split()[0] for t in background.threads) == [
        "clientlb-discovery",
        "clientlb-health",
        "clientlb-probes",
    ]
    wait_for(lambda: pool.snapshot()["upstreams"] != [], what="discovery")
    wait_for(lambda: pool.snapshot()["upstreams"][0]["state"] == "down", what="a failed check")
    started = time.monotonic()
    background.close()  # a check may be waiting on the silent upstream
    assert time.monotonic() - started < check.timeout + 2.0  # not a hang: bounded by the check
    assert background_threads() == []
    background.close()  # idempotent
    with pytest.raises(RuntimeError):
        background.start()


def test_nothing_to_run_starts_nothing() -> None:
    with Background(Pool(["http://a:1"], outlier=None)) as background:
        assert background.threads == []
    quiet = OutlierDetection(probe_after=None)
    with Background(Pool(["http://a:1"], outlier=quiet)) as background:
        assert background.threads == []
    Background(Pool(["http://a:1"])).close()  # closing an unstarted runner is fine


def test_probes_run_by_default() -> None:
    with Background(Pool(["http://a:1"])) as background:
        assert [t.name for t in background.threads] == ["clientlb-probes"]
    assert background_threads() == []


@pytest.mark.anyio
async def test_async_runner_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "up.json"
    path.write_text('{"upstreams": ["http://a:1"]}')
    pool = Pool(allow_empty=True)
    background = AsyncBackground(pool, discovery=File(path, interval=0.01))
    await background.aclose()  # safe before start
    background = AsyncBackground(pool, discovery=File(path, interval=0.01))
    await background.start()
    with pytest.raises(RuntimeError):
        await background.start()
    await await_for(lambda: len(pool) == 1, what="discovery")
    await background.aclose()
    await background.aclose()
    path.write_text('{"upstreams": ["http://b:1"]}')
    await anyio.sleep(0.05)  # quiet: the provider was cancelled
    assert [m.upstream.url for m in pool.members] == ["http://a:1"]

    async with AsyncBackground(Pool(["http://a:1"])) as idle:
        assert idle.checker is None and idle.providers == []


@pytest.mark.anyio
async def test_async_runner_in_a_callers_task_group(tmp_path: Path) -> None:
    path = tmp_path / "up.toml"
    path.write_text('upstreams = ["http://a:1"]\n')
    pool = Pool(allow_empty=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(AsyncBackground(pool, discovery=File(path, interval=0.01)).run)
        await await_for(lambda: len(pool) == 1, what="discovery")
        tg.cancel_scope.cancel()


def test_runners_check_their_arguments() -> None:
    with pytest.raises(TypeError):
        Background("http://a:1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^discovery: "):
        Background(Pool(["http://a:1"]), discovery=["not a provider"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"^health_check: "):
        AsyncBackground(Pool(["http://a:1"]), health_check="/health")  # type: ignore[arg-type]
