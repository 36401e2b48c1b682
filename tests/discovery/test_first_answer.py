"""A pool filled only by discovery serves its first request: starting the owner
waits (boundedly) for the registry's first answer."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

import clientlb
from clientlb.discovery import File

from ..replicas import Replica

pytestmark = pytest.mark.integration


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def registry(tmp_path: Path, replica: Replica) -> Path:
    path = tmp_path / "upstreams.toml"
    path.write_text(f'upstreams = ["{replica.url}"]\n')
    return path


def test_sync_transport_serves_its_first_request(tmp_path: Path) -> None:
    with Replica("only") as replica:
        pool = clientlb.Pool(discovery=File(registry(tmp_path, replica), interval=5))
        with httpx.Client(transport=clientlb.BalancingTransport(pool)) as client:
            assert client.get("http://svc/first").status_code == 200
        assert replica.count(path="/first") == 1


@pytest.mark.anyio
async def test_async_transport_serves_its_first_request(tmp_path: Path) -> None:
    with Replica("only") as replica:
        pool = clientlb.Pool(discovery=File(registry(tmp_path, replica), interval=5))
        async with httpx.AsyncClient(transport=clientlb.AsyncBalancingTransport(pool)) as client:
            assert (await client.get("http://svc/first")).status_code == 200
        assert replica.count(path="/first") == 1


def test_an_unreachable_registry_delays_start_only_boundedly(tmp_path: Path) -> None:
    pool = clientlb.Pool(discovery=File(tmp_path / "missing.toml", interval=5))
    started = time.monotonic()
    transport = clientlb.BalancingTransport(pool)  # the registry fails at once
    try:
        assert time.monotonic() - started < 4.0  # not the 5 s first-answer wait
        with pytest.raises(clientlb.NoUpstreamAvailable):
            transport.handle_request(httpx.Request("GET", "http://svc/"))
    finally:
        transport.close()
