"""What every discovery provider shares: the loops, the backoff, and the rule that a
failing registry never empties a pool.

A provider asks its registry for the current endpoints. ``Feed`` (no I/O) decides
what each answer or failure means: apply a new set with ``pool.update()``, skip a
repeat, keep the last good set when the registry is unreachable, answers garbage
or answers nothing, log once per state change, and how long to wait before the
next try (bounded exponential backoff with jitter). The sync loop ``run()`` (for a
thread) and the async loop ``arun()`` (anyio: asyncio or trio) are a few lines
around it; each provider supplies one ``poll()`` and one ``apoll()``.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio

from .._core import ConfigError, Pool, Upstream

log = logging.getLogger("clientlb.discovery")

TIERS = ("primary", "standby")


class InvalidAnswer(Exception):
    """The registry answered, but with something that is not a set of endpoints."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    """One answer from a registry: the upstreams of each tier."""

    primaries: tuple[Upstream, ...] = ()
    standbys: tuple[Upstream, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[tuple[Upstream, bool]]) -> Endpoints:
        """From ``(upstream, is_standby)`` pairs: one entry per URL, a primary
        winning over a standby of the same URL, in a stable (sorted) order."""
        chosen: dict[str, tuple[Upstream, bool]] = {}
        for upstream, standby in entries:
            seen = chosen.get(upstream.key)
            if seen is None or (seen[1] and not standby):
                chosen[upstream.key] = (upstream, standby)
        ordered = sorted(chosen.values(), key=lambda e: e[0].key)
        return cls(
            tuple(up for up, standby in ordered if not standby),
            tuple(up for up, standby in ordered if standby),
        )

    def __bool__(self) -> bool:
        return bool(self.primaries or self.standbys)

    def same_as(self, other: Endpoints | None) -> bool:
        """Same URLs, tiers and weights."""

        def signature(e: Endpoints) -> tuple[object, ...]:
            return tuple((u.key, u.weight) for u in e.primaries), tuple(
                (u.key, u.weight) for u in e.standbys
            )

        return other is not None and signature(self) == signature(other)

    def __str__(self) -> str:
        return f"{len(self.primaries)} primaries, {len(self.standbys)} standbys"


def parse_entry(value: object, where: str) -> tuple[Upstream, bool]:
    """An endpoint from a registry: a URL, or ``{"url", "weight", "tier"}``."""
    try:
        if isinstance(value, str):
            return Upstream(value), False
        if isinstance(value, dict):
            unknown = set(value) - {"url", "weight", "tier"}
            if unknown:
                raise InvalidAnswer(f"{where}: unknown fields {sorted(unknown)}")
            tier = value.get("tier", "primary")
            if tier not in TIERS:
                raise InvalidAnswer(f"{where}: tier must be 'primary' or 'standby', got {tier!r}")
            return Upstream(value.get("url", ""), value.get("weight", 1)), tier == "standby"
    except ConfigError as exc:
        raise InvalidAnswer(f"{where}: {exc}") from None
    raise InvalidAnswer(f"{where}: expected a URL or an object with a url, got {value!r}")


def positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(name, f"must be a number, got {value!r}")
    if value <= 0:
        raise ConfigError(name, f"must be > 0, got {value!r}")
    return float(value)


class Feed:
    """The decisions of one provider feeding one pool (no I/O)."""

    def __init__(
        self, provider: Provider, pool: Pool, on_first_answer: Callable[[], None] | None = None
    ) -> None:
        self.provider = provider
        self.pool = pool
        self._on_first_answer = on_first_answer
        self.applied: Endpoints | None = None
        self.state = "starting"
        self.failures = 0  # in a row
        self.answers = 0  # answers and failures seen, for tests and status pages

    def publish(self, endpoints: Endpoints) -> None:
        """The registry answered ``endpoints``: apply them unless they are empty."""
        self.answers += 1
        if not endpoints and not self.provider.allow_empty:
            self._enter("empty", "answered no endpoints")
        else:
            self._enter("ok", f"answering: {endpoints}")
            self.failures = 0
            if not endpoints.same_as(self.applied):
                self.pool.update(
                    endpoints.primaries,
                    endpoints.standbys,
                    drain_timeout=self.provider.drain_timeout,
                )
                if self.applied is not None:
                    log.info("%r: now %s", self.provider, endpoints)
                self.applied = endpoints
        self._answered()

    def _answered(self) -> None:
        if self._on_first_answer is not None:
            callback, self._on_first_answer = self._on_first_answer, None
            callback()

    def failed(self, error: BaseException) -> float:
        """The registry failed; return how long to wait before trying again."""
        self.answers += 1
        kind = "invalid" if isinstance(error, InvalidAnswer) else "unreachable"
        self._enter(kind, f"{type(error).__name__}: {error}")
        self.failures += 1
        self._answered()
        return self.provider.backoff(self.failures)

    def _enter(self, state: str, detail: str) -> None:
        """Log once per state change, never per retry."""
        if state == self.state:
            return
        previous, self.state = self.state, state
        if state == "ok":
            if previous != "starting":
                log.info("%r: registry is back (%s)", self.provider, detail)
            return
        kept = str(self.applied) if self.applied is not None else "the configured upstreams"
        log.warning("%r: registry %s: %s; keeping %s", self.provider, state, detail, kept)


class Provider:
    """Base class of discovery providers.

    **Parameters (every provider):**

    * **min_backoff**, **max_backoff** - seconds between retries while the registry
      fails: doubling from the first to at most the second, with jitter.
    * **drain_timeout** - seconds an upstream that left the registry may finish
      its requests in flight (``pool.update``); ``None`` waits for them all.
    * **allow_empty** - apply an answer with no endpoints (by default it is taken
      as a registry fault and the last good set is kept).

    A provider feeds one pool at a time, from ``run()`` in a thread or ``arun()`` in
    a task; ``clientlb``'s transports and proxies start and stop them.
    """

    def __init__(
        self,
        *,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        drain_timeout: float | None = 30.0,
        allow_empty: bool = False,
    ) -> None:
        self.min_backoff = positive("min_backoff", min_backoff)
        self.max_backoff = positive("max_backoff", max_backoff)
        if self.max_backoff < self.min_backoff:
            raise ConfigError("max_backoff", f"must be >= min_backoff, got {max_backoff!r}")
        if drain_timeout is not None:
            drain_timeout = positive("drain_timeout", drain_timeout)
        self.drain_timeout = drain_timeout
        self.allow_empty = bool(allow_empty)
        self.rng = random.Random()
        self.feed: Feed | None = None  # the running loop's state, for status pages and tests

    def backoff(self, failures: int) -> float:
        """Seconds before retry number ``failures`` (1, 2, ...): between half and
        all of ``min_backoff * 2 ** (failures - 1)``, at most ``max_backoff``."""
        ceiling = min(self.max_backoff, self.min_backoff * 2.0 ** min(failures - 1, 32))
        return ceiling * (0.5 + 0.5 * self.rng.random())

    # -- drivers ----------------------------------------------------------------

    def run(
        self,
        pool: Pool,
        stop: threading.Event,
        on_first_answer: Callable[[], None] | None = None,
    ) -> None:
        """Feed ``pool`` until ``stop`` is set (the body of a thread); call
        ``on_first_answer`` once the registry has answered or failed once."""
        self.feed = feed = Feed(self, pool, on_first_answer)
        while not stop.is_set():
            try:
                delay = self.poll(feed, stop)
            except Exception as exc:
                if stop.is_set():
                    break
                delay = feed.failed(exc)
            if stop.wait(delay):
                break

    async def arun(self, pool: Pool, on_first_answer: Callable[[], None] | None = None) -> None:
        """Feed ``pool`` until cancelled (an anyio task)."""
        self.feed = feed = Feed(self, pool, on_first_answer)
        while True:
            try:
                delay = await self.apoll(feed)
            except Exception as exc:
                delay = feed.failed(exc)
            await anyio.sleep(delay)

    def interrupt(self) -> None:
        """Wake a ``poll()`` blocked on the registry so that ``run()`` sees its stop
        event promptly (called from another thread)."""

    # -- what providers implement -------------------------------------------------

    def poll(self, feed: Feed, stop: threading.Event) -> float:
        """Ask the registry (blocking), pass answers to ``feed.publish()``, and
        return the seconds until the next poll. Raise on failure."""
        raise NotImplementedError

    async def apoll(self, feed: Feed) -> float:
        """The async twin of ``poll()``."""
        raise NotImplementedError
