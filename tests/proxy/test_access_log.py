"""What the proxies say about each request: the access line, the decision
record in the scope and in an opt-in header, and tracing spans."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import clientlb
from clientlb._proxy import ProxyApp

from ..replicas import Replica, closed_port
from ..waiting import wait_for
from .servers import Served

pytestmark = pytest.mark.integration

ACCESS = "clientlb.access"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS]


def test_one_line_per_request_with_where_and_why(
    proxy: Callable[..., tuple[ProxyApp, Served]],
    replicas: list[Replica],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = closed_port()
    caplog.set_level(logging.INFO, logger=ACCESS)
    _, served = proxy([dead, replicas[0].url], access_log=True, outlier=None)
    with httpx.Client(base_url=served.url) as client:
        for _ in range(2):  # one of the two starts at the dead upstream and moves on
            assert client.post("/items?x=1", content=b"12345").status_code == 200
    # each line is written once the response is out: it may land just after
    lines = wait_for(lambda: len(access_lines(caplog)) == 2 and access_lines(caplog), "lines")
    retried = next(r for r in lines if "connect_failure" in r.getMessage())
    text = retried.getMessage()
    assert text.startswith("POST /items?x=1 200 ")
    assert f"upstream={replicas[0].url}" in text and "reason=balanced" in text
    assert f'attempts="{dead} connect_failure, {replicas[0].url} 200"' in text
    assert "bytes_in=5" in text and "bytes_out=" in text and "duration_ms=" in text
    record = retried.__dict__["clientlb_access"]
    assert record["status"] == 200 and record["bytes_in"] == 5
    assert record["bytes_out"] > 0 and record["client"] == "127.0.0.1"


def test_refused_requests_are_logged_too(
    proxy: Callable[..., tuple[ProxyApp, Served]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    _, served = proxy([closed_port()], access_log=True, outlier=None)
    assert httpx.get(served.url + "/x").status_code == 502
    (line,) = wait_for(lambda: access_lines(caplog), what="the access line")
    assert line.getMessage().startswith("GET /x 502 ")
    assert "connect_failure" in line.getMessage()


def test_off_by_default(
    proxy: Callable[..., tuple[ProxyApp, Served]],
    replicas: list[Replica],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    _, served = proxy([replicas[0].url])
    response = httpx.get(served.url + "/x")
    assert response.status_code == 200
    assert access_lines(caplog) == []
    assert "x-upstream" not in response.headers


def test_the_decision_header_is_opt_in(
    proxy: Callable[..., tuple[ProxyApp, Served]], replicas: list[Replica]
) -> None:
    urls = [r.url for r in replicas]
    _, served = proxy(urls, algorithm="least_connections", decision_header="X-Upstream")
    response = httpx.get(served.url + "/x")
    value = response.headers["x-upstream"]
    fields = dict(part.split("=", 1) for part in value.split("; "))
    answered = next(r for r in replicas if r.name == response.json()["replica"])
    assert fields["upstream"] == answered.url
    assert fields["reason"] == "balanced" and fields["algorithm"] == "least_connections"
    assert fields["tier"] == "primary" and fields["attempts"] == "1"
    assert fields["upstream"] in urls
    scored = fields["candidates"].split(",")
    assert len(scored) == 3 and all(s.split(" ")[0] in urls for s in scored)
    with pytest.raises(clientlb.ConfigError, match=r"^decision_header: "):
        ProxyApp(urls, decision_header="no spaces")


def test_a_standby_pick_says_failover(
    proxy: Callable[..., tuple[ProxyApp, Served]], replicas: list[Replica], standby: Replica
) -> None:
    primary = replicas[0]
    primary.stop()
    _, served = proxy([primary.url], standbys=[standby.url], decision_header="X-Upstream")
    with httpx.Client(base_url=served.url) as client:
        for _ in range(6):  # the primary is ejected after 5 refused connections
            client.get("/x")
        value = client.get("/x").headers["x-upstream"]
    assert f"upstream={standby.url}; reason=failover;" in value
    assert "tier=standby" in value


def test_wsgi_access_line_and_header(
    replicas: list[Replica], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    app = clientlb.WSGIProxy([replicas[0].url], access_log=True, decision_header="X-Upstream")
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {
        "REQUEST_METHOD": "PUT",
        "PATH_INFO": "/things/1",
        "QUERY_STRING": "a=b",
        "SERVER_NAME": "svc",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "svc",
        "CONTENT_LENGTH": "3",
        "REMOTE_ADDR": "10.1.2.3",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b"abc"),
    }
    try:
        body = app(environ, start_response)
        data = b"".join(body)
        body.close()  # type: ignore[attr-defined]
    finally:
        app.close()
    assert seen["status"].startswith("200")
    assert "reason=balanced" in seen["headers"]["x-upstream"]
    assert environ["clientlb.decision"].upstream == replicas[0].url
    (line,) = access_lines(caplog)
    text = line.getMessage()
    assert text.startswith("PUT /things/1?a=b 200 ")
    assert f"bytes_in=3 bytes_out={len(data)} client=10.1.2.3" in text


def test_a_recording_span_gets_the_decision(
    proxy: Callable[..., tuple[ProxyApp, Served]], replicas: list[Replica]
) -> None:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    transport = clientlb.BalancingTransport([replicas[0].url])
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        with tracer.start_as_current_span("call"):
            client.get("/x")
        client.get("/y")  # no span: nothing to annotate, nothing fails
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["clientlb.upstream"] == replicas[0].url
    assert attributes["clientlb.reason"] == "balanced"
    assert attributes["clientlb.algorithm"] == "round_robin"
    assert attributes["clientlb.attempts"] == 1
    assert list(attributes["clientlb.attempt_outcomes"]) == [f"{replicas[0].url} 200"]  # type: ignore[arg-type]
