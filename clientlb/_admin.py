"""The admin listener: what an operator reads about a running proxy.

* ``/stats`` - the pool's snapshot as JSON (``Pool.snapshot()``).
* ``/status`` - the same as a small HTML table.
* ``/metrics`` - Prometheus text exposition (format 0.0.4), written here exactly
  as ``prometheus-client`` would write the same families (a test holds the two
  to the same bytes): ten times faster, which matters at 10,000 upstreams.

A Starlette app on its own port, so it never shares a listener with proxied
traffic. It may share the proxy's event loop (``clientlb proxy`` does), so every
page is rendered in a worker thread: at 10,000 upstreams a page is 20-60 ms of
work, of which the pool's lock is held only for the copy of its counters (about
3 ms). Requests that arrive while a page renders wait for that rendering rather
than start their own, and a page that was costly to render is served again for a
short while (``_Page``), never once its snapshot is ``max_age`` seconds old (1 by
default); a small pool's pages are rendered afresh for every request.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .._core import Pool
from .._core._turns import taking_turns

#: (snapshot key, metric, type, help) of the per-upstream metrics labelled by tier.
_PER_UPSTREAM = (
    ("in_flight", "clientlb_upstream_in_flight", "gauge", "Requests in flight to the upstream."),
    ("requests", "clientlb_upstream_requests_total", "counter", "Requests sent to the upstream."),
    ("failures", "clientlb_upstream_failures_total", "counter", "Failed requests to the upstream."),
    (
        "ejections",
        "clientlb_upstream_ejections_total",
        "counter",
        "Times the upstream was ejected.",
    ),
    (
        "ewma_latency",
        "clientlb_upstream_latency_ewma_seconds",
        "gauge",
        "EWMA of response latency.",
    ),
)
_UP_DOC = "Whether the upstream may be picked (1) or not (0)."
_PANIC_DOC = "Whether the pool balances over every upstream, healthy or not."
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_text(snapshot: dict[str, Any]) -> str:
    """The snapshot in Prometheus text format (version 0.0.4), as
    ``prometheus_client.generate_latest`` writes it: labels in name order, values
    as Go prints floats."""
    ups = snapshot["upstreams"]
    urls = [_label(up["url"]) for up in taking_turns(ups)]
    lines = []
    for key, name, kind, doc in _PER_UPSTREAM:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        lines += [
            f'{name}{{tier="{up["tier"]}",upstream="{url}"}} {_number(value)}'
            for url, up in taking_turns(zip(urls, ups, strict=True))
            if (value := up.get(key)) is not None
        ]
    lines += [f"# HELP clientlb_upstream_up {_UP_DOC}", "# TYPE clientlb_upstream_up gauge"]
    lines += [
        f'clientlb_upstream_up{{state="{up["state"]}",upstream="{url}"}} {_up(up["state"])}.0'
        for url, up in taking_turns(zip(urls, ups, strict=True))
    ]
    lines += [
        f"# HELP clientlb_pool_panic {_PANIC_DOC}",
        "# TYPE clientlb_pool_panic gauge",
        f"clientlb_pool_panic {int(bool(snapshot['panic']))}.0",
    ]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """A sample value as Go (and so prometheus-client) prints it."""
    if type(value) is int and 0 <= value < 1_000_000:
        return f"{value}.0"  # the common case: a count
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _up(state: str) -> int:
    return 1 if state in ("healthy", "slow-start") else 0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def stats_json(body: dict[str, Any]) -> str:
    """``body`` as indented JSON with one line per upstream: readable, and written
    by the C encoder (``indent=`` alone takes the pure-Python one, 6x slower)."""
    parts = []
    for key, value in body.items():
        if key == "upstreams" and value:
            rows = ",\n    ".join(json.dumps(up) for up in taking_turns(value))
            text = f"[\n    {rows}\n  ]"
        else:
            text = json.dumps(value)
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


#: A page that took longer than this to render is served again for a while ...
CACHE_ABOVE = 0.005
#: ... for this many times as long as it took to render, and at most ``max_age``.
CACHE_FACTOR = 10


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


def admin_app(
    pool: Pool,
    extra: dict[str, Any] | None = None,
    *,
    max_age: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The admin ASGI app for ``pool``; ``extra`` is merged into ``/stats``. No page
    is served from a snapshot older than ``max_age`` seconds (0: every request
    renders); ``clock`` times that, for tests."""

    def render_stats() -> bytes:
        return stats_json({**pool.snapshot(), **(extra or {})}).encode()

    def render_status() -> bytes:
        snap = pool.snapshot()
        rows = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(_cell(c, up.get(c)))}</td>" for c in _COLUMNS)
            + "</tr>"
            for up in taking_turns(snap["upstreams"])
        )
        head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
        panic = " <b>(panic: every upstream is out)</b>" if snap["panic"] else ""
        page = (
            f"<!doctype html><title>clientlb status</title><h1>clientlb</h1>"
            f"<p>algorithm: {html.escape(snap['algorithm'])}{panic}</p>"
            f"<table border=1 cellpadding=4><tr>{head}</tr>{rows}</table>"
        )
        return page.encode()

    def render_metrics() -> bytes:
        return metrics_text(pool.snapshot()).encode()

    stats_page = _Page(render_stats, max_age, clock)
    status_page = _Page(render_status, max_age, clock)
    metrics_page = _Page(render_metrics, max_age, clock)

    async def stats(request: Request) -> Response:
        return Response(await stats_page.get(), media_type="application/json")

    async def status(request: Request) -> Response:
        return HTMLResponse(await status_page.get())

    async def metrics(request: Request) -> Response:
        return Response(await metrics_page.get(), media_type=METRICS_TYPE)

    return Starlette(
        routes=[
            Route("/stats", stats),
            Route("/status", status),
            Route("/metrics", metrics),
            Route("/", status),
        ]
    )


_COLUMNS = (
    "url",
    "tier",
    "state",
    "weight",
    "in_flight",
    "ewma_latency",
    "requests",
    "failures",
    "ejections",
)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "ewma_latency":
        return f"{value * 1000:.1f} ms"
    return f"{value:g}" if isinstance(value, float) else str(value)
