"""Run ``clientlb proxy``: the proxy and the admin listener on the front end.

Both listeners share one event loop (uvloop when installed) and are served by
the project's own HTTP/1.1 front end (``_front``), which enforces every client
limit of ``[limits]``. SIGTERM and SIGINT stop both gracefully: the listeners
stop accepting, requests in flight finish (for at most
``server.graceful_shutdown`` seconds; those still waiting then get 503), then
the proxy's background work stops and upstream connections close. A second
SIGINT cuts the grace period short.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

from .._admin import admin_app
from .._core import Pool
from .._metrics import Metrics
from ._asgi import ProxyApp
from ._config import Settings, discovery_providers
from ._front import FrontEnd, raise_fd_limit

log = logging.getLogger("clientlb.proxy")


def build_app(settings: Settings) -> ProxyApp:
    """The ``ProxyApp`` the settings describe."""
    pool = Pool(
        settings.upstreams,
        settings.standbys,
        settings.algorithm,
        allow_empty=bool(settings.discovery.get("uris")),
        health_check=settings.health,
        discovery=discovery_providers(settings) or None,
        **settings.pool_options(),
    )
    return ProxyApp(
        pool=pool,
        hash_on=settings.hash_on,
        sticky=settings.sticky,
        trusted_proxies=settings.trusted_proxies,
        preserve_host=settings.preserve_host,
        retry_body_limit=settings.retry_body_limit,
        timeout=settings.timeouts,
        verify=settings.verify,
        limits=settings.limits,
        websockets=settings.websockets,
        metrics=Metrics(),
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
    return sock


@contextlib.contextmanager
def _signals(stop: asyncio.Event, hurry: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        if stop.is_set() and sig == signal.SIGINT:
            hurry.set()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def serve(
    settings: Settings,
    sockets: tuple[socket.socket, socket.socket | None],
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve until a signal arrives; ``ready`` is called once both listen."""
    loop = asyncio.get_running_loop()
    app = build_app(settings)
    await app.startup()
    fronts = [FrontEnd(app, settings.limits, loop, access_log=settings.server["access_log"])]
    fronts[0].serve(sockets[0])
    if sockets[1] is not None:
        host, port = sockets[0].getsockname()[:2]
        admin = admin_app(
            app, token_file=settings.admin_token_file, extra={"listen": f"{host}:{port}"}
        )
        _warn_if_exposed(sockets[1], settings.admin_token_file)
        fronts.append(FrontEnd(admin, settings.limits, loop))
        fronts[1].serve(sockets[1])
    stop, hurry = asyncio.Event(), asyncio.Event()
    try:
        with _signals(stop, hurry):
            if settings.server["gc_freeze"]:
                _freeze_heap()
            _announce(sockets, len(app.pool))
            if ready is not None:
                ready()
            await stop.wait()
            log.info("shutting down")
            grace = float(settings.server["graceful_shutdown"])
            shutdowns = asyncio.gather(*(front.shutdown(grace) for front in fronts))
            hurried = asyncio.ensure_future(hurry.wait())
            either: set[asyncio.Future[Any]] = {shutdowns, hurried}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not shutdowns.done():
                for front in fronts:
                    for conn in list(front.connections):
                        conn.abort()
                await shutdowns
            hurried.cancel()
    finally:
        await app.shutdown()


def _warn_if_exposed(sock: socket.socket, token_file: str | None) -> None:
    """A warning when the admin listens beyond loopback with no token: it is
    read-only then, but anyone who can reach it reads the upstreams and traffic."""
    host = sock.getsockname()[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and token_file is None:
        log.warning(
            "the admin listener on %s is reachable beyond this host and has no "
            "--admin-token-file: it is read-only, but anyone who reaches it reads "
            "the upstreams and their traffic; bind it to 127.0.0.1 or firewall it",
            host,
        )


def _freeze_heap() -> None:
    """Move everything alive after startup out of the collector's sight: a full
    collection would walk every module and class object each time, which under
    load shows up as multi-millisecond stalls in the p99 latency."""
    gc.collect()
    gc.freeze()


def _announce(sockets: tuple[socket.socket, socket.socket | None], upstreams: int) -> None:
    """One line saying where the proxy listens (the bound ports, even for port 0)
    and what it runs on."""
    host, port = sockets[0].getsockname()[:2]
    admin = ""
    if sockets[1] is not None:
        admin_host, admin_port = sockets[1].getsockname()[:2]
        admin = f", admin on http://{admin_host}:{admin_port}"
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    log.info(
        "listening on http://%s:%d%s, %d upstreams (clientlb HTTP/1.1 front end and engine, "
        "%s event loop)",
        host,
        port,
        admin,
        upstreams,
        "uvloop" if loop == "uvloop" else "asyncio",
    )


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``[server] loop`` names: uvloop when installed (``auto``)."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    return None


def run(settings: Settings, ready: Callable[[], None] | None = None) -> None:
    """Bind, then serve on the best event loop available until a signal."""
    backlog = int(settings.server["backlog"])
    raise_fd_limit(settings.limits)
    proxy_sock = bind(settings.listen, backlog)
    admin_sock = None
    try:
        admin_sock = bind(settings.admin, backlog) if settings.admin else None
        factory: Any = loop_factory(settings.server["loop"])
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(settings, (proxy_sock, admin_sock), ready))
    finally:
        proxy_sock.close()
        if admin_sock is not None:
            admin_sock.close()
