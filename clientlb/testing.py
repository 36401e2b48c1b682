"""Test doubles for code that uses clientlb: a clock that moves only when told,
and upstreams that answer from a script. No sockets, and no sleeping unless asked.

``FakeClock`` is a callable returning the time. Give it to a pool
(``Pool(clock=clock)``) and move it with ``clock.advance(seconds)``: ejection
times, slow start, fail-back holds, drain deadlines, retry budgets and measured
latencies all follow it.

``ScriptedUpstreams`` is an httpx transport, sync and async in one object (like
``httpx.MockTransport``), that answers each request as the script of the upstream
it is addressed to says. Give it to a balancing transport as ``inner=``::

    import httpx
    import clientlb
    from clientlb.testing import FakeClock, Reply, ScriptedUpstreams, after

    clock = FakeClock()
    upstreams = ScriptedUpstreams(
        {
            "http://a:1": httpx.ConnectError,  # refuses every connection
            "http://b:1": [503, 200],  # one step per request; the last repeats
            "http://c:1": after(0.25, Reply(200, body=b"slow")),  # a quarter second later
        },
        clock=clock,  # delays move the fake clock instead of sleeping
    )
    pool = clientlb.Pool(["http://a:1", "http://b:1", "http://c:1"], clock=clock)
    transport = clientlb.BalancingTransport(pool, inner=upstreams)
    with httpx.Client(transport=transport, base_url="http://users") as client:
        for _ in range(20):  # refusals and the 503 are retried on another upstream
            assert client.get("/users/1").text in ("http://b:1", "slow")
    assert upstreams.calls.count("http://a:1") == 5  # then it was ejected
    assert pool.snapshot()["upstreams"][0]["state"] == "ejected"
    clock.advance(10.0)  # for ten seconds
    assert pool.snapshot()["upstreams"][0]["state"] == "healthy"

A step is one of:

* an ``int``: a response with that status, whose body is the upstream's URL (as
  written in the script), so a test can see who answered;
* ``Reply(status, body=..., headers=...)``: that response;
* an exception class or instance (``httpx.ConnectError``,
  ``httpx.ReadTimeout("slow")``, ``httpx.RemoteProtocolError``...): raised, with
  the request attached to httpx's errors. Connect errors (``httpx.ConnectError``,
  ``httpx.ConnectTimeout``) are raised before the request body is read, as a
  refused connection is; for every other step the body is read first, as a
  server that received the request does;
* ``after(seconds, step)``: ``step``, that much later. With ``clock=`` the delay
  moves that clock (and is over at once); without, it is real (``time.sleep``,
  or ``anyio.sleep`` under asyncio or trio). A delay beyond the request's timeout
  (httpx's ``read``, or ``connect`` for a connect error) ends at the timeout in
  ``httpx.ReadTimeout`` (``httpx.ConnectTimeout``), as with a server that
  answers too late;
* a callable taking the ``httpx.Request`` (its body read) and returning a step,
  or an ``httpx.Response`` of its own.

A script is one step (every request gets it), a list of steps (in order; the
last one repeats), or any other iterable, taken one step per request
(``itertools.cycle([200, 503])``). A script's key is an upstream URL, path
prefix included: a request goes to the longest key it falls under (so
``"http://a:1/health"`` can script a health check apart from the traffic of
``"http://a:1"``; checks run through ``inner=`` take steps too). A request for
an upstream with no script fails with ``httpx.ConnectError``.

``calls`` lists the script key of each request, in order; ``requests`` the
requests themselves.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from ._core import Upstream
from ._httpx import httpx

__all__ = ["FakeClock", "Reply", "ScriptedUpstreams", "after"]


class FakeClock:
    """A monotonic clock that moves only when told: ``clock()`` is the time in
    seconds (from ``start``), ``clock.advance(seconds)`` moves it on. For
    ``Pool(clock=...)`` and ``ScriptedUpstreams(clock=...)``; safe to share
    between threads."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` (>= 0) on."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a number, got {seconds!r}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a clock only moves forwards, by a finite time: got {seconds!r}")
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"<FakeClock {self._now:g}>"


@dataclass(frozen=True)
class Reply:
    """A scripted response: ``status``, ``body`` (the upstream's URL if ``None``)
    and ``headers``."""

    status: int = 200
    body: bytes | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _is_status(self.status):
            raise ValueError(f"not an HTTP status: {self.status!r}")


@dataclass(frozen=True)
class Delayed:
    """``step``, ``seconds`` after the request arrives (see ``after``)."""

    seconds: float
    step: Step


def after(seconds: float, step: Step) -> Delayed:
    """``step``, ``seconds`` after the request arrives."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"seconds must be a number, got {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a delay is a finite number of seconds >= 0, got {seconds!r}")
    _check_step(step)
    return Delayed(float(seconds), step)


#: What a script's step may be (see the module's documentation).
Step = int | Reply | Delayed | BaseException | type[BaseException] | Callable[[httpx.Request], Any]
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


def _is_status(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def _check_step(step: object) -> None:
    if isinstance(step, type):
        if issubclass(step, BaseException):
            return
    elif _is_status(step) or isinstance(step, Reply | Delayed | BaseException) or callable(step):
        return
    raise TypeError(
        f"a step is an HTTP status, a Reply, an exception, after(seconds, step) or a "
        f"callable of the request, got {step!r}"
    )


def _handler(step: object) -> bool:
    return callable(step) and not isinstance(step, type)


def _delayed(step: object) -> tuple[object, float]:
    """``step`` without its ``after()`` wrappers, and their delay in all."""
    delay = 0.0
    while isinstance(step, Delayed):
        delay += step.seconds
        step = step.step
    return step, delay


def _called(handler: object, request: httpx.Request) -> tuple[object, float]:
    """What a callable step answers ``request`` with, and its delay."""
    delay = 0.0
    step = handler
    while _handler(step):
        step = step(request)  # type: ignore[operator]  # callable, checked above
        if isinstance(step, httpx.Response):
            return step, delay
        _check_step(step)
        step, more = _delayed(step)
        delay += more
    return step, delay


class _Script:
    """One upstream's steps, taken one per request."""

    def __init__(self, name: str, prefix: str, script: object) -> None:
        self.name = name
        self.prefix = prefix
        self._last: object = None
        self._steps: Iterator[object]
        if isinstance(script, list | tuple):
            if not script:
                raise ValueError(f"the script of {name} has no step")
            for step in script:
                _check_step(step)
            self._steps = iter(script)
        elif isinstance(script, str | bytes | Mapping) or not isinstance(script, Iterable):
            _check_step(script)
            self._steps = iter(())
            self._last = script
        else:
            self._steps = iter(script)

    def take(self) -> Step:
        step = next(self._steps, None)
        if step is None:
            if self._last is None:
                raise RuntimeError(f"the script of {self.name} ran out before its first step")
            step = self._last
        else:
            _check_step(step)
            self._last = step
        return step  # type: ignore[return-value]  # checked above


class ScriptedUpstreams(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Upstreams that answer as ``scripts`` say: ``{upstream URL: script}``.

    **Parameters:**

    * **scripts** - per upstream URL, one step, a list of steps (the last
      repeats) or an iterable of them; see the module's documentation.
    * **clock** - a ``FakeClock`` that ``after()`` delays move, instead of
      waiting for real.
    """

    def __init__(self, scripts: Mapping[str, Any], *, clock: FakeClock | None = None) -> None:
        if not isinstance(scripts, Mapping):
            raise TypeError(
                f"scripts: expected a mapping of upstream URL to script, got {scripts!r}"
            )
        if clock is not None and not isinstance(clock, FakeClock):
            raise TypeError(f"clock: expected a FakeClock or None, got {clock!r}")
        self.clock = clock
        self.calls: list[str] = []
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()
        self._routes: dict[str, list[_Script]] = {}
        for url, script in scripts.items():
            up = Upstream(url)
            origin = up.key[: len(up.key) - len(up.prefix)]
            self._routes.setdefault(origin, []).append(_Script(url, up.prefix, script))
        for routes in self._routes.values():
            routes.sort(key=lambda s: len(s.prefix), reverse=True)  # longest prefix first

    # -- deciding ---------------------------------------------------------------------

    def _route(self, url: httpx.URL) -> _Script | None:
        host = url.host
        netloc = f"[{host}]" if ":" in host else host
        port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
        path = url.raw_path.split(b"?", 1)[0].decode("ascii")
        for script in self._routes.get(f"{url.scheme}://{netloc}:{port}", ()):
            prefix = script.prefix
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                return script
        return None

    def _next(self, request: httpx.Request) -> tuple[str, object, float]:
        """The script's name, the step for ``request`` and its delay so far (a
        callable is left for the driver to call once the body is read)."""
        with self._lock:
            script = self._route(request.url)
            name = script.name if script is not None else str(request.url)
            self.calls.append(name)
            self.requests.append(request)
            if script is None:
                return name, httpx.ConnectError(f"no script for {request.url}"), 0.0
            step: object = script.take()
        return (name, *_delayed(step))

    @staticmethod
    def _connects(step: object) -> bool:
        """Whether ``step`` fails the connection (before the request is sent)."""
        kind = step if isinstance(step, type) else type(step)
        return issubclass(kind, _CONNECT_ERRORS)

    @staticmethod
    def _limit(request: httpx.Request, connects: bool) -> float | None:
        timeouts = request.extensions.get("timeout") or {}
        limit = timeouts.get("connect" if connects else "read")
        return float(limit) if limit is not None else None

    @staticmethod
    def _outcome(name: str, step: object, request: httpx.Request) -> httpx.Response:
        """The response ``step`` makes, or raise the exception it is."""
        if isinstance(step, httpx.Response):
            return step
        if isinstance(step, type) and issubclass(step, BaseException):
            message = f"scripted {step.__name__} from {name}"
            if issubclass(step, httpx.RequestError):
                raise step(message, request=request)
            raise step(message)
        if isinstance(step, BaseException):
            if isinstance(step, httpx.RequestError) and step._request is None:
                step.request = request
            raise step.with_traceback(None)
        if isinstance(step, Reply):
            body = step.body if step.body is not None else name
            return httpx.Response(step.status, headers=dict(step.headers), content=body)
        assert isinstance(step, int)
        return httpx.Response(step, content=name.encode(), headers={"content-type": "text/plain"})

    @staticmethod
    def _late(name: str, connects: bool, limit: float, request: httpx.Request) -> Exception:
        kind = httpx.ConnectTimeout if connects else httpx.ReadTimeout
        return kind(f"{name} did not answer within {limit:g} s", request=request)

    # -- the two drivers --------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        name, step, delay = self._next(request)
        if _handler(step):
            request.read()
            step, more = _called(step, request)
            delay += more
        connects = self._connects(step)
        if not connects:
            request.read()
        limit = self._limit(request, connects)
        late = limit is not None and delay > limit
        self._sleep(limit if late and limit is not None else delay)
        if late and limit is not None:
            raise self._late(name, connects, limit, request)
        return self._outcome(name, step, request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name, step, delay = self._next(request)
        if _handler(step):
            await request.aread()
            step, more = _called(step, request)
            delay += more
        connects = self._connects(step)
        if not connects:
            await request.aread()
        limit = self._limit(request, connects)
        late = limit is not None and delay > limit
        await self._asleep(limit if late and limit is not None else delay)
        if late and limit is not None:
            raise self._late(name, connects, limit, request)
        return self._outcome(name, step, request)

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    async def _asleep(self, seconds: float) -> None:
        if self.clock is not None:
            if seconds > 0:
                self.clock.advance(seconds)
            seconds = 0  # a checkpoint all the same, as real I/O would be
        await anyio.sleep(seconds)
