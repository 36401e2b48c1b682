"""A proxy with thousands of upstreams from a file keeps serving while the file is
parsed and applied, and while the admin pages render: its event loop (shared with
the admin app, as in ``clientlb proxy``) never waits for either."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clientlb import Pool, admin_app
from clientlb._proxy import ProxyMiddleware
from clientlb.discovery import Endpoints, File, _file

from ..waiting import wait_for
from .servers import Named, serve

pytestmark = pytest.mark.integration

MEMBERS = 2000


def write(path: Path, urls: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("upstreams = [\n" + "".join(f'  "{url}",\n' for url in urls) + "]\n")
    tmp.replace(path)


def serving(pool: Pool) -> int:
    return sum(m.health.value != "draining" for m in pool.members)


@pytest.fixture
def upstream() -> Iterator[Any]:
    with serve(Named("up")) as served:
        yield served


def test_the_proxy_serves_while_a_large_file_is_parsed_and_pages_render(
    tmp_path: Path, upstream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "upstreams.toml"
    base = [f"{upstream.url}/base"]
    large = base + [f"{upstream.url}/m{i:04d}" for i in range(MEMBERS)]
    write(path, base)
    parsing, parsed = threading.Event(), threading.Event()
    parse = _file.parse_document

    def held_parse(data: bytes, fmt: str) -> Endpoints:
        if b"/m0000" in data:  # the large answer waits until the test lets it go
            parsing.set()
            parsed.wait(10)
        return parse(data, fmt)

    monkeypatch.setattr(_file, "parse_document", held_parse)
    pool = Pool(allow_empty=True, discovery=File(path, interval=0.01))
    app = ProxyMiddleware(admin_app(pool), prefix="/api", pool=pool)
    with serve(app, lifespan="on") as proxy, httpx.Client(base_url=proxy.url, timeout=5) as client:
        wait_for(lambda: len(pool) == 1, "the first answer")
        assert client.get("/api/x").text == "up http /base/x"

        write(path, large)
        assert parsing.wait(10)
        for i in range(10):  # the parse is held: the proxy answers all the same
            assert client.get(f"/api/held{i}").text == f"up http /base/held{i}"
        parsed.set()
        wait_for(lambda: serving(pool) == MEMBERS + 1, "the large answer applied")
        landed = {client.get("/api/y").text.split()[2].split("/")[1] for _ in range(10)}
        assert len(landed) == 10 and landed <= {u.rsplit("/", 1)[1] for u in large}

        snapshot = pool.snapshot
        rendering, rendered = threading.Event(), threading.Event()

        def held_snapshot() -> dict[str, Any]:
            rendering.set()
            rendered.wait(10)
            return snapshot()

        pool.snapshot = held_snapshot  # type: ignore[method-assign]
        metrics: list[httpx.Response] = []
        scrape = threading.Thread(target=lambda: metrics.append(client.get("/metrics")))
        scrape.start()
        assert rendering.wait(10)
        for i in range(10):  # a page is rendering: the proxy answers all the same
            assert client.get(f"/api/r{i}").status_code == 200
        rendered.set()
        scrape.join(10)
        assert metrics[0].text.count('clientlb_upstream_state{pool="default",state="healthy"') == (
            MEMBERS + 1
        )
        pool.snapshot = snapshot  # type: ignore[method-assign]

        write(path, base)
        wait_for(lambda: serving(pool) == 1, "the large answer gone")
        for i in range(10):
            assert client.get(f"/api/z{i}").text == f"up http /base/z{i}"
