"""Run ``clientlb proxy``: the proxy and the admin listener on the front end.

Both listeners share one event loop (uvloop when installed) and are served by
the project's own HTTP/1.1 front end (``_front``), which enforces every client
limit of ``[limits]``. SIGTERM and SIGINT stop both gracefully: the listeners
stop accepting, requests in flight finish (for at most
``server.graceful_shutdown`` seconds; those still waiting then get 503), then
the proxy's background work stops and upstream connections close. A second
SIGINT cuts the grace period short. SIGHUP reloads the config file without
dropping connections or requests in flight (see ``_reload``).
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
from operator import attrgetter
from typing import Any

from .._admin import admin_app
from .._core import Pool
from .._metrics import Metrics
from ._asgi import ProxyApp
from ._config import Settings, discovery_providers
from ._engines import AsyncEngine
from ._front import FrontEnd, raise_fd_limit
from ._reload import Reloader

log = logging.getLogger("clientlb.proxy")


def build_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    pool: Pool | None = None,
    metrics: Metrics | None = None,
) -> ProxyApp:
    """The ``ProxyApp`` the settings describe; a reload passes the running
    engine, the running pool when the pool's options are unchanged, and the
    process's metrics collector (its counters outlive a reload)."""
    if pool is None:
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
        access_log=settings.server["access_log"],
        decision_header=settings.server["decision_header"] or None,
        engine=engine,
        metrics=metrics if metrics is not None else Metrics(),
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


#: SIGHUP where there is one (not on Windows).
SIGHUP: signal.Signals | None = getattr(signal, "SIGHUP", None)


@contextlib.contextmanager
def _signals(stop: asyncio.Event, hurry: asyncio.Event, hup: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        if stop.is_set() and sig == signal.SIGINT:
            hurry.set()
        stop.set()

    handled = [signal.SIGTERM, signal.SIGINT]
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    if SIGHUP is not None:
        loop.add_signal_handler(SIGHUP, hup.set)
        handled.append(SIGHUP)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _either(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def serve(
    settings: Settings,
    sockets: tuple[socket.socket, socket.socket | None],
    ready: Callable[[], None] | None = None,
    reload: Callable[[], Settings] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; ``ready`` is called once both listen.
    At SIGHUP, ``reload`` gives the new settings (the file read again)."""
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    app = build_app(settings, metrics=metrics)
    await app.startup()
    fronts = [FrontEnd(app, settings.limits, loop)]
    fronts[0].serve(sockets[0])
    metrics._gauge("clientlb_proxy_client_connections", fronts[0], attrgetter("open_connections"))
    host, port = sockets[0].getsockname()[:2]
    extra = {"listen": f"{host}:{port}"}
    if sockets[1] is not None:
        admin = admin_app(app, metrics=metrics, token_file=settings.admin_token_file, extra=extra)
        _warn_if_exposed(sockets[1], settings.admin_token_file)
        fronts.append(FrontEnd(admin, settings.limits, loop))
        fronts[1].serve(sockets[1])

    def switch(new: Settings, app: ProxyApp, new_pool: bool) -> None:
        fronts[0].use(app, new.limits)  # the new app writes the access log, if on
        if len(fronts) > 1:
            admin = (
                admin_app(app, metrics=metrics, token_file=new.admin_token_file, extra=extra)
                if new_pool
                else fronts[1].app
            )
            fronts[1].use(admin, new.limits)

    def build(new: Settings, *, engine: AsyncEngine | None, pool: Pool | None) -> ProxyApp:
        if pool is None:  # a new pool takes the old one's name in the metrics
            for old in metrics.pools.values():
                metrics.unwatch(old)
        return build_app(new, engine=engine, pool=pool, metrics=metrics)

    reloader = Reloader(settings, app, reload or (lambda: settings), build, switch)
    stop, hurry, hup = asyncio.Event(), asyncio.Event(), asyncio.Event()
    try:
        with _signals(stop, hurry, hup):
            if settings.server["gc_freeze"]:
                _freeze_heap()
            _announce(sockets, len(app.pool))
            if ready is not None:
                ready()
            while not stop.is_set():
                await _either(stop, hup)
                if hup.is_set() and not stop.is_set():
                    hup.clear()
                    await reloader.reload()
            log.info("shutting down")
            grace = float(reloader.settings.server["graceful_shutdown"])
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
        await reloader.shutdown()


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
        "%s, %s event loop)",
        host,
        port,
        admin,
        upstreams,
        "compiled" if compiled() else "interpreted",
        "uvloop" if loop == "uvloop" else "asyncio",
    )


def compiled() -> bool:
    """Whether the data path runs compiled (a build with the mypyc hook of
    pyproject.toml) rather than as Python source."""
    from . import _express

    return not (_express.__file__ or "").endswith(".py")


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


def run(
    settings: Settings,
    ready: Callable[[], None] | None = None,
    reload: Callable[[], Settings] | None = None,
) -> None:
    """Bind, then serve on the best event loop available until a signal;
    ``reload`` gives the settings at SIGHUP (default: the same)."""
    backlog = int(settings.server["backlog"])
    raise_fd_limit(settings.limits)
    proxy_sock = bind(settings.listen, backlog)
    admin_sock = None
    try:
        admin_sock = bind(settings.admin, backlog) if settings.admin else None
        factory: Any = loop_factory(settings.server["loop"])
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(settings, (proxy_sock, admin_sock), ready, reload))
    finally:
        proxy_sock.close()
        if admin_sock is not None:
            admin_sock.close()
