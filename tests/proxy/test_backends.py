"""The ASGI proxy in-process under both anyio backends: asyncio picks the lean
engine, trio the anyio one; both forward and both answer errors alike."""

from __future__ import annotations

import json

import httpx
import pytest

from clientlb import Pool
from clientlb._proxy import ProxyApp, ProxyMiddleware
from clientlb._proxy._engines import AnyioEngine

from ..replicas import Replica

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_forwarding_under_each_backend(anyio_backend: str) -> None:
    with Replica("a") as up:
        app = ProxyApp([up.url])
        transport = httpx.ASGITransport(app=app, client=("192.0.2.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
            r = await client.post("/p%2Fq?x=1&x=2", content=b"body")
        await app.shutdown()
    record = json.loads(r.content)
    assert (record["raw_path"], record["query"], record["body_length"]) == ("/p%2Fq", "x=1&x=2", 4)
    assert ["x-forwarded-for", "192.0.2.1"] in record["headers"]


async def test_middleware_passes_other_paths_and_errors_are_plain(anyio_backend: str) -> None:
    async def local(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"local"})

    app = ProxyMiddleware(local, "/api", pool=Pool([], allow_empty=True), engine=AnyioEngine())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
        assert (await client.get("/home")).text == "local"
        r = await client.get("/api/x")
    assert r.status_code == 503 and r.text.startswith("503")


async def test_a_fault_in_the_engine_is_a_plain_502(anyio_backend: str) -> None:
    class Broken:
        async def request(self, *args: object) -> None:
            raise ZeroDivisionError("bug")

        async def aclose(self) -> None:
            pass

    app = ProxyApp(["http://127.0.0.1:9"], engine=Broken())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://f") as c:
        r = await c.get("/x")
    assert r.status_code == 502 and b"Traceback" not in r.content
    assert app.pool.snapshot()["upstreams"][0]["in_flight"] == 0


async def test_middleware_strips_the_prefix_and_passes_lifespan(anyio_backend: str) -> None:
    events: list[str] = []

    async def local(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"local"})

    with Replica("a") as up:
        app = ProxyMiddleware(local, "/api", upstreams=[up.url + "/v1"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
            r = await client.get("/api/users/%2F1?x=1")
            assert (await client.get("/apiary")).text == "local"
        await app.proxy.shutdown()
    record = json.loads(r.content)
    assert (record["raw_path"], record["query"]) == ("/v1/users/%2F1", "x=1")

    async def lifespan_receive() -> dict[str, str]:
        return {"type": "lifespan.startup" if not events else "lifespan.shutdown"}

    async def lifespan_send(message: object) -> None:
        pass

    await app({"type": "lifespan"}, lifespan_receive, lifespan_send)
    assert events == ["lifespan.startup", "lifespan.shutdown"]
