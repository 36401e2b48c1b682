"""Background work runs wherever clientlb is embedded: a client nobody entered,
an app mounted where no lifespan reaches it, pre-forked workers."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import clientlb
from clientlb import HealthCheck
from clientlb._background import AsyncBackground

from ..proxy.servers import Served
from ..replicas import Replica
from ..waiting import CheckClock, assert_stopped, await_for, wait_for

pytestmark = pytest.mark.integration

FAST = HealthCheck(interval=0.05, timeout=1.0)


def state(pool: clientlb.Pool, url: str) -> str:
    return next(m.state for m in pool.members if m.url == url)


def checks(replica: Replica) -> int:
    return replica.count(path="/health")


# -- a client nobody entered ---------------------------------------------------------


@pytest.mark.anyio
async def test_a_module_level_client_runs_its_checks(replicas: list[Replica]) -> None:
    """``client = httpx.AsyncClient(transport=t)`` used without ``async with``:
    the first request starts the checks, ``aclose()`` stops them."""
    transport = clientlb.AsyncBalancingTransport([r.url for r in replicas], health_check=FAST)
    client = httpx.AsyncClient(transport=transport, base_url="http://svc")
    assert checks(replicas[0]) == 0
    assert (await client.get("/")).status_code == 200
    await await_for(lambda: checks(replicas[0]) >= 3, what="checks without async with")
    replicas[1].status = 500
    replicas[1].health_status = 503
    await await_for(lambda: state(transport.pool, replicas[1].url) == "down", what="down")
    await client.aclose()
    with CheckClock(Replica("clock"), FAST) as clock:
        assert_stopped(lambda: checks(replicas[0]), clock)


def test_the_checks_start_again_in_the_next_event_loop(
    replicas: list[Replica], anyio_backend: str
) -> None:
    """A loop that ends takes the detached task with it; the next start, from
    another loop, runs the checks again."""
    background = AsyncBackground(clientlb.Pool([replicas[0].url]), health_check=FAST)

    async def from_a_request() -> None:
        assert background.idle
        await background.start_detached()
        assert not background.idle
        target = checks(replicas[0]) + 3
        await await_for(lambda: checks(replicas[0]) >= target, what="checks in this loop")

    anyio.run(from_a_request, backend=anyio_backend)
    anyio.run(from_a_request, backend=anyio_backend)

    async def close() -> None:
        await background.start_detached()
        await background.aclose()
        assert not background.idle  # closed for good

    anyio.run(close, backend=anyio_backend)


# -- mounted in Starlette ------------------------------------------------------------


def test_a_mounted_proxy_forwards_below_the_mount_and_runs_its_checks(
    replicas: list[Replica],
) -> None:
    """Starlette runs no lifespan for a mounted app and keeps the full path in the
    scope: the proxy starts its checks with its first request, and the upstream
    receives the path below the mount."""
    proxy = clientlb.ProxyApp(upstreams=[r.url for r in replicas], health_check=FAST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield  # nothing to start: the proxy starts with its first request
        await proxy.shutdown()  # its connections close with the app

    app = Starlette(routes=[Mount("/api", app=proxy)], lifespan=lifespan)
    with Served(app, lifespan="on") as served, httpx.Client(base_url=served.url) as client:
        response = client.get("/api/users/1?x=%2F")
        assert response.status_code == 200
        assert response.json()["path"] == "/users/1"
        assert response.json()["query"] == "x=%2F"
        wait_for(lambda: checks(replicas[0]) >= 3, what="checks of a mounted proxy")


def test_a_wsgi_proxy_forwards_below_its_script_name(replicas: list[Replica]) -> None:
    proxy = clientlb.WSGIProxy(upstreams=[replicas[0].url])
    try:
        seen: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            seen["status"] = status

        environ = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "/api",
            "PATH_INFO": "/users/1",
            "RAW_URI": "/api/users/1?x=1",
            "QUERY_STRING": "x=1",
            "SERVER_NAME": "svc",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "svc",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
        }
        body = b"".join(proxy(environ, start_response))
        assert seen["status"].startswith("200"), body
        assert json.loads(body)["path"] == "/users/1"
    finally:
        proxy.close()


# -- pre-forked workers (gunicorn --preload) -----------------------------------------

APP = """
import json, os, threading
import clientlb

proxy = clientlb.WSGIProxy(
    upstreams=[os.environ["UPSTREAM"]],
    health_check=clientlb.HealthCheck(interval=0.05, timeout=1.0),
)


served = []


def app(environ, start_response):
    if environ["PATH_INFO"] == "/-/worker":
        body = json.dumps({
            "pid": os.getpid(),
            "served": bool(served),
            "threads": sorted(t.name for t in threading.enumerate()),
            "state": proxy.snapshot()["upstreams"][0]["state"],
        }).encode()
        start_response("200 OK", [("content-type", "application/json")])
        return [body]
    served.append(1)
    return proxy(environ, start_response)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_gunicorn_preload_workers_run_their_own_checks(
    replicas: list[Replica], tmp_path: Path
) -> None:
    """The proxy is built in gunicorn's master (``--preload``); its check thread
    does not survive the fork, so each worker starts its own with its first
    request, and each sees the upstream go down."""
    pytest.importorskip("gunicorn")
    (tmp_path / "preloaded.py").write_text(textwrap.dedent(APP))
    port = _free_port()
    env = {**os.environ, "UPSTREAM": replicas[0].url, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"]
    command += ["--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5", "preloaded:app"]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        workers: dict[int, dict[str, Any]] = {}

        def every_worker_seen(healthy: str) -> bool:
            with httpx.Client(base_url=url, timeout=5) as client:  # a new connection each
                try:
                    client.get("/x")  # each worker starts its checks with its first one
                    info = client.get("/-/worker").json()
                except httpx.TransportError:
                    return False  # not listening yet
            if info["served"] and info["state"] == healthy:  # it proxied a request
                workers[info["pid"]] = info
            return len(workers) == 2

        wait_for(lambda: every_worker_seen("healthy"), what="both workers", timeout=30)
        for info in workers.values():
            assert "clientlb-health" in info["threads"], info
        replicas[0].health_status = 503
        replicas[0].status = 503
        workers.clear()
        wait_for(lambda: every_worker_seen("down"), what="both workers see it down", timeout=30)
    finally:
        server.terminate()
        try:
            _, err = server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    assert b"Traceback" not in err, err.decode(errors="replace")


def test_a_forked_child_starts_the_checks_again(replicas: list[Replica]) -> None:
    """``os.fork()`` directly: the child's first request starts its checks."""
    transport = clientlb.BalancingTransport([replicas[0].url], health_check=FAST)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its threads after one request, then leave
        code = 1
        try:
            with httpx.Client(transport=transport, base_url="http://svc") as client:
                before = threading.enumerate()
                client.get("/")
                after = [t.name for t in threading.enumerate()]
                os.write(write, json.dumps([len(before), after]).encode())
                code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = json.loads(pipe.read() or b"null")
    _, status = os.waitpid(pid, 0)
    transport.close()
    assert os.waitstatus_to_exitcode(status) == 0
    threads_before, names_after = report
    assert threads_before == 1  # nothing of the parent's survived the fork
    assert "clientlb-health" in names_after and "clientlb-probes" in names_after
