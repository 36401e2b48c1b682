"""``admin_app``: what an operator reads about running pools, as an ASGI app.

* ``/status`` - a page that refreshes itself every second (``_status_page``).
* ``/stats`` - the pools' snapshots as JSON, with the recent latencies and
  events the collector keeps.
* ``/metrics`` - Prometheus text exposition (``Metrics.render``).
* ``POST /drain``, ``/enable``, ``/weight`` - changes, only with a bearer token
  (``_admin_writes``); every request's ``Host`` is checked there too.

Users mount it in their own app; ``clientlb proxy`` serves the same app on its
admin listener. It may share the event loop of the traffic it reports on, so
every page is rendered in a worker thread: at 10,000 upstreams a page is tens of
milliseconds of work, of which the pool's lock is held only for the copy of its
counters (about 3 ms). Requests that arrive while a page renders wait for that
rendering rather than start their own, and a page that was costly to render is
served again for a short while (``_Page``), never once its snapshot is
``max_age`` seconds old (1 by default); a small pool's pages are rendered afresh
for every request, so a state change shows at the next refresh.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ._admin_writes import HostGuard, Token, write_routes
from ._core import ConfigError, Pool
from ._core._turns import taking_turns
from ._exposition import CONTENT_TYPE
from ._metrics import Metrics
from ._status_page import status_page

#: A page that took longer than this to render is served again for a while ...
CACHE_ABOVE = 0.005
#: ... for this many times as long as it took to render, and at most ``max_age``.
CACHE_FACTOR = 10


def admin_app(
    *sources: Any,
    metrics: Metrics | None = None,
    token_file: str | None = None,
    allowed_hosts: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
    max_age: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """An ASGI app serving ``/status``, ``/stats`` and ``/metrics`` for ``sources``.

    **Parameters:**

    * **sources** - pools, transports or proxies (``ProxyApp``, ``WSGIProxy``
      and their middleware), or a mapping ``{name: any of those}`` that names
      them. A transport's services keep their names; a pool named nowhere is
      ``"default"``. Without sources: every pool ``metrics`` watches.
    * **metrics** - the ``Metrics`` to report (latencies, responses, retries,
      events); by default the one a source was given, else a new one that sees
      the pools' events but no requests.
    * **token_file** - a file holding the bearer token that allows ``POST
      /drain``, ``/enable`` and ``/weight``; without it they answer 403.
    * **allowed_hosts** - ``Host`` names accepted besides loopback names and
      the address the request came to (against DNS rebinding: others get 421).
    * **extra** - merged into ``/stats``.
    * **max_age** - no page is served from a snapshot older than this (0: every
      request renders); **clock** times that, for tests.
    """
    metrics, pools = _resolve(sources, metrics)
    token = Token(token_file) if token_file is not None else None
    added = dict(extra or {})

    def render_stats() -> bytes:
        return stats_json(stats_body(metrics, pools(), added)).encode()

    def render_status() -> bytes:
        return status_page(stats_json(stats_body(metrics, pools(), added)))

    def render_metrics() -> bytes:
        return metrics.render().encode()

    pages = {
        "stats": _Page(render_stats, max_age, clock),
        "status": _Page(render_status, max_age, clock),
        "metrics": _Page(render_metrics, max_age, clock),
    }

    async def stats(request: Request) -> Response:
        return Response(await pages["stats"].get(), media_type="application/json")

    async def status(request: Request) -> Response:
        return HTMLResponse(await pages["status"].get(), headers=_PAGE_HEADERS)

    async def metrics_page(request: Request) -> Response:
        return Response(await pages["metrics"].get(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/stats", stats),
            Route("/status", status),
            Route("/metrics", metrics_page),
            Route("/", status),
            *write_routes(pools, token),
        ],
        middleware=[Middleware(HostGuard, allowed=tuple(allowed_hosts))],
    )


#: The page runs only its own inline script and style, and is never framed.
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


def _resolve(sources: tuple[Any, ...], metrics: Metrics | None) -> tuple[Metrics, Any]:
    """The collector to report, and a function listing the pools to show by name."""
    named: list[tuple[str | None, Pool]] = []
    given: list[Metrics] = []
    for source in sources:
        items = source.items() if isinstance(source, Mapping) else [(None, source)]
        for name, item in items:
            found = getattr(item, "metrics", None) or getattr(
                getattr(item, "proxy", None), "metrics", None
            )
            if isinstance(found, Metrics):
                given.append(found)
            for service, pool in _pools_of(item):
                named.append((name if name is not None else service, pool))
    if metrics is None:
        metrics = given[0] if given else Metrics()
    elif not isinstance(metrics, Metrics):
        raise ConfigError("metrics", f"expected a clientlb.Metrics, got {metrics!r}")
    shown = {pool: metrics.watch(pool, name or "default") for name, pool in named}
    if not sources:
        return metrics, lambda: metrics.pools
    return metrics, lambda: {name: pool for pool, name in shown.items()}


def _pools_of(item: Any) -> list[tuple[str | None, Pool]]:
    """The pools of a source, with their service names where they have one."""
    if isinstance(item, Pool):
        return [(None, item)]
    proxy = getattr(item, "proxy", None)  # the proxies' middleware
    if proxy is not None and isinstance(getattr(proxy, "pool", None), Pool):
        return [(None, proxy.pool)]
    services = getattr(item, "_services", None)  # transports
    if isinstance(getattr(item, "_pool", None), Pool):
        return [(None, item._pool)]
    if isinstance(services, dict):
        return list(services.items())
    if isinstance(getattr(item, "pool", None), Pool):
        return [(None, item.pool)]
    raise ConfigError("sources", f"expected pools, transports or proxies, got {item!r}")


def stats_body(
    metrics: Metrics, pools: Mapping[str, Pool], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """``/stats``: one pool's snapshot at the top level (the common case, as
    ``Pool.snapshot()``), or several under ``"pools"``; each with the tier that
    serves and per upstream its recent latency; then the recent events, and the
    proxies' connections and WebSockets (``"proxy"``) where something reports them."""
    bodies = {}
    for name, pool in pools.items():
        snapshot = pool.snapshot()
        latency = metrics.latency(pool)
        for row in snapshot["upstreams"]:
            row.update(latency.get(row["url"], _NO_LATENCY))
        bodies[name] = {"pool": name, "serving": metrics.serving(pool), **snapshot}
    events = [asdict(e) for e in metrics.events(list(bodies))]
    gauges = metrics.gauges()
    proxy = {"proxy": gauges} if gauges else {}
    if len(bodies) == 1:
        return {**next(iter(bodies.values())), "events": events, **proxy, **extra}
    return {"pools": bodies, "events": events, **proxy, **extra}


_NO_LATENCY: dict[str, Any] = {"p50": None, "p99": None, "recent": [], "penalized": False}


def stats_json(body: dict[str, Any]) -> str:
    """``body`` as indented JSON with one line per upstream and per event:
    readable, and written by the C encoder (``indent=`` alone takes the
    pure-Python one, 6x slower)."""
    return "{\n" + ",\n".join(_member(key, value, "  ") for key, value in body.items()) + "\n}\n"


def _member(key: str, value: Any, indent: str) -> str:
    if key in ("upstreams", "events") and value:
        rows = f",\n{indent}  ".join(json.dumps(row) for row in taking_turns(value))
        text = f"[\n{indent}  {rows}\n{indent}]"
    elif key == "pools" and value:
        inner = indent + "  "
        pools = ",\n".join(
            f"{inner}{json.dumps(name)}: {{\n"
            + ",\n".join(_member(k, v, inner + "  ") for k, v in body.items())
            + f"\n{inner}}}"
            for name, body in value.items()
        )
        text = "{\n" + pools + f"\n{indent}}}"
    else:
        text = json.dumps(value)
    return f"{indent}{json.dumps(key)}: {text}"


class _Page:
    """One page, rendered in a worker thread, one rendering at a time.

    A page cheap to render (under ``CACHE_ABOVE`` seconds: a pool of a few hundred
    upstreams) is rendered for every request. A costlier one is served again until
    its snapshot is ``CACHE_FACTOR`` times its rendering time old, at most
    ``max_age`` seconds, so that rendering takes at most about a tenth of the
    time however often the page is asked for."""

    def __init__(
        self, render: Callable[[], bytes], max_age: float, clock: Callable[[], float]
    ) -> None:
        self.render = render
        self.max_age = max_age
        self.clock = clock
        self.body = b""
        self.expires = -math.inf
        self.lock = anyio.Lock()

    async def get(self) -> bytes:
        async with self.lock:
            taken = self.clock()
            if taken >= self.expires:
                self.body = await anyio.to_thread.run_sync(self.render)
                cost = self.clock() - taken
                if cost >= CACHE_ABOVE:
                    self.expires = taken + min(self.max_age, CACHE_FACTOR * cost)
            return self.body
