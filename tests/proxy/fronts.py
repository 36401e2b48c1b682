"""The ways a proxy test can serve ``ProxyApp``: the project's own front end (what
``clientlb proxy`` runs), or uvicorn with either of its HTTP parsers, each in a
thread on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from clientlb._proxy._front import FrontEnd
from clientlb._proxy._limits import Limits
from clientlb._proxy._serve import bind

from .servers import Served

FRONTS = ("front", "uvicorn-httptools", "uvicorn-h11")


class FrontServed:
    """An ASGI app behind ``FrontEnd`` with ``limits``, on its own event loop in a
    thread; the app's ``startup()``/``shutdown()`` run when it has them."""

    def __init__(self, app: Any, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.sock = bind(("127.0.0.1", 0), 512)
        self.port: int = self.sock.getsockname()[1]
        self.front: FrontEnd | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        startup = getattr(self.app, "startup", None)
        if startup is not None:
            await startup()
        try:
            self.front = FrontEnd(self.app, self.limits, self._loop)
            self.front.serve(self.sock)
            self._started.set()
            await self._stop.wait()
            await self.front.shutdown(1.0)
        finally:
            shutdown = getattr(self.app, "shutdown", None)
            if shutdown is not None:
                await shutdown()

    def start(self) -> FrontServed:
        self._thread.start()
        if not self._started.wait(10) or self._error is not None:
            raise RuntimeError(f"front end did not start: {self._error!r}")
        return self

    def call(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the server's loop."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.sock.close()

    def __enter__(self) -> FrontServed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_with(front: str, app: Any, limits: Limits | None = None) -> FrontServed | Served:
    """Start ``app`` behind ``front`` (one of ``FRONTS``)."""
    if front == "front":
        return FrontServed(app, limits).start()
    http = front.removeprefix("uvicorn-")
    return Served(app, http=http, lifespan="on").start()  # type: ignore[arg-type]
