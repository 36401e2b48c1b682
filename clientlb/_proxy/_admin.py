"""The admin listener: what an operator reads about a running proxy.

* ``/stats`` - the pool's snapshot as JSON (``Pool.snapshot()``).
* ``/status`` - the same as a small HTML table.
* ``/metrics`` - Prometheus text exposition: through ``prometheus-client`` when it
  is installed, else written here in the same format.

A Starlette app on its own port, so it never shares a listener with proxied
traffic.
"""

from __future__ import annotations

import html
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .._core import Pool

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


def metrics_text(snapshot: dict[str, Any]) -> str:
    """The snapshot in Prometheus text format (version 0.0.4)."""
    lines = []
    for key, name, kind, doc in _PER_UPSTREAM:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        for up in snapshot["upstreams"]:
            value = up.get(key)
            if value is None:
                continue
            labels = f'upstream="{_label(up["url"])}",tier="{up["tier"]}"'
            lines.append(f"{name}{{{labels}}} {float(value):g}")
    lines += [
        "# HELP clientlb_upstream_up Whether the upstream may be picked (1) or not (0).",
        "# TYPE clientlb_upstream_up gauge",
    ]
    for up in snapshot["upstreams"]:
        up_value = _up(up["state"])
        labels = f'upstream="{_label(up["url"])}",state="{up["state"]}"'
        lines.append(f"clientlb_upstream_up{{{labels}}} {up_value}")
    lines += [
        "# HELP clientlb_pool_panic Whether the pool balances over every upstream, healthy or not.",
        "# TYPE clientlb_pool_panic gauge",
        f"clientlb_pool_panic {int(bool(snapshot['panic']))}",
    ]
    return "\n".join(lines) + "\n"


_UP_DOC = "Whether the upstream may be picked (1) or not (0)."
_PANIC_DOC = "Whether the pool balances over every upstream, healthy or not."


def _up(state: str) -> int:
    return 1 if state in ("healthy", "slow-start") else 0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _prometheus(pool: Pool) -> tuple[bytes, str] | None:
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError:
        return None

    class Collector:
        def collect(self) -> Any:
            snap = pool.snapshot()
            for key, name, kind, doc in _PER_UPSTREAM:
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                family = cls(name, doc, labels=["upstream", "tier"])
                for up in snap["upstreams"]:
                    if up.get(key) is not None:
                        family.add_metric([up["url"], up["tier"]], float(up[key]))
                yield family
            up_family = GaugeMetricFamily(
                "clientlb_upstream_up", _UP_DOC, labels=["upstream", "state"]
            )
            for up in snap["upstreams"]:
                up_family.add_metric([up["url"], up["state"]], _up(up["state"]))
            yield up_family
            yield GaugeMetricFamily("clientlb_pool_panic", _PANIC_DOC, value=int(snap["panic"]))

    registry = CollectorRegistry()
    registry.register(Collector())
    return generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8"


def admin_app(pool: Pool, extra: dict[str, Any] | None = None) -> Starlette:
    """The admin ASGI app for ``pool``; ``extra`` is merged into ``/stats``."""

    async def stats(request: Request) -> Response:
        body = {**pool.snapshot(), **(extra or {})}
        return Response(json.dumps(body, indent=2) + "\n", media_type="application/json")

    async def status(request: Request) -> Response:
        snap = pool.snapshot()
        rows = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(_cell(c, up.get(c)))}</td>" for c in _COLUMNS)
            + "</tr>"
            for up in snap["upstreams"]
        )
        head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
        panic = " <b>(panic: every upstream is out)</b>" if snap["panic"] else ""
        page = (
            f"<!doctype html><title>clientlb status</title><h1>clientlb</h1>"
            f"<p>algorithm: {html.escape(snap['algorithm'])}{panic}</p>"
            f"<table border=1 cellpadding=4><tr>{head}</tr>{rows}</table>"
        )
        return HTMLResponse(page)

    async def metrics(request: Request) -> Response:
        exposed = _prometheus(pool)
        if exposed is not None:
            return Response(exposed[0], media_type=exposed[1])
        return Response(metrics_text(pool.snapshot()), media_type="text/plain; version=0.0.4")

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
