"""Run ``clientlb proxy``: the proxy and the admin listener under uvicorn.

Both servers share one event loop (uvloop and httptools when installed). SIGTERM
and SIGINT stop both gracefully: the listeners close, requests in flight finish
(for at most ``server.graceful_shutdown`` seconds), then the lifespan shutdown
stops the background work and closes upstream connections. A second SIGINT
forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any, Literal

import uvicorn

from .._core import Pool
from ._admin import admin_app
from ._asgi import ProxyApp
from ._config import Settings, discovery_providers

log = logging.getLogger("clientlb.proxy")


def build_app(settings: Settings) -> ProxyApp:
    """The ``ProxyApp`` the settings describe."""
    pool = Pool(
        settings.upstreams,
        settings.standbys,
        settings.algorithm,
        allow_empty=bool(settings.discovery.get("uris")),
        **settings.pool_options(),
    )
    return ProxyApp(
        pool=pool,
        trusted_proxies=settings.trusted_proxies,
        preserve_host=settings.preserve_host,
        retry_body_limit=settings.retry_body_limit,
        timeout=settings.timeouts,
        verify=settings.verify,
        health_check=settings.health,
        discovery=discovery_providers(settings) or None,
    )


def bind(address: tuple[str, int], backlog: int) -> socket.socket:
    """A listening socket (so that port 0 and errors are known before serving)."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _server(
    app: Any, settings: Settings, *, lifespan: Literal["on", "off"], access_log: bool
) -> uvicorn.Server:
    opts = settings.server
    config = uvicorn.Config(
        app,
        http=opts["http"],
        loop=opts["loop"],
        lifespan=lifespan,
        access_log=access_log,
        log_level=opts["log_level"],
        timeout_graceful_shutdown=int(opts["graceful_shutdown"]),
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_config=None,
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server


@contextlib.contextmanager
def _signals(servers: list[uvicorn.Server]) -> Iterator[None]:
    def stop(sig: int, frame: Any) -> None:
        for server in servers:
            if server.should_exit and sig == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def serve(
    settings: Settings,
    sockets: tuple[socket.socket, socket.socket | None],
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve until a signal arrives; ``ready`` is called once both listen."""
    app = build_app(settings)
    main = _server(app, settings, lifespan="on", access_log=bool(settings.server["access_log"]))
    servers = [main]
    if sockets[1] is not None:
        host, port = sockets[0].getsockname()[:2]
        extra = {"listen": f"{host}:{port}"}
        servers.append(
            _server(admin_app(app.pool, extra), settings, lifespan="off", access_log=False)
        )
    with _signals(servers):
        tasks = [asyncio.create_task(main.serve(sockets=[sockets[0]]))]
        if len(servers) > 1:
            tasks.append(asyncio.create_task(servers[1].serve(sockets=[sockets[1]])))  # type: ignore[list-item]
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        else:
            if settings.server["gc_freeze"]:
                _freeze_heap()
            _announce(sockets, len(app.pool))
            if ready is not None:
                ready()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for server in servers:  # one stopped (signal or failure): stop the other
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()


def _freeze_heap() -> None:
    """Move everything alive after startup out of the collector's sight: a full
    collection would walk every module and class object each time, which under
    load shows up as multi-millisecond stalls in the p99 latency."""
    gc.collect()
    gc.freeze()


def _announce(sockets: tuple[socket.socket, socket.socket | None], upstreams: int) -> None:
    """One line saying where the proxy listens (the bound ports, even for port 0)."""
    host, port = sockets[0].getsockname()[:2]
    admin = ""
    if sockets[1] is not None:
        admin_host, admin_port = sockets[1].getsockname()[:2]
        admin = f", admin on http://{admin_host}:{admin_port}"
    log.info("listening on http://%s:%d%s, %d upstreams", host, port, admin, upstreams)


def run(settings: Settings, ready: Callable[[], None] | None = None) -> None:
    """Bind, then serve on the best event loop available until a signal."""
    backlog = int(settings.server["backlog"])
    proxy_sock = bind(settings.listen, backlog)
    admin_sock = bind(settings.admin, backlog) if settings.admin else None
    config = uvicorn.Config(lambda *a: None, loop=settings.server["loop"])
    loop_factory = config.get_loop_factory()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(settings, (proxy_sock, admin_sock), ready))
    finally:
        proxy_sock.close()
        if admin_sock is not None:
            admin_sock.close()
