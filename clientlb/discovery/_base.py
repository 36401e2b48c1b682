"""What every discovery provider shares: the loops, the backoff, and the rule that a
failing registry never empties a pool.

A provider asks its registry for the current endpoints. ``Feed`` decides what each
answer or failure means, with no I/O (``publish`` and ``apublish`` carry it out):
apply a new set with ``pool.update_steps()``, skip a repeat, keep the last good set
when the registry is unreachable, answers garbage or answers nothing, say what it
rejected (below), and how long to wait before the next try (bounded exponential
backoff with jitter). The sync loop ``run()`` (for a thread) and the async loop
``arun()`` (anyio: asyncio or trio) are a few lines around it; each provider
supplies one ``poll()`` and one ``apoll()``.

Large answers stay off the event loop: providers parse in a worker thread, and the
async feed (``Feed.apublish``) prepares the change in a worker thread too, then
applies it in steps of ``UPDATE_STEP`` members with a checkpoint between steps.

What is logged (logger ``clientlb.discovery``): each change of state (ok, empty,
invalid, unreachable); each distinct failure, once per ``LOG_INTERVAL`` seconds,
the repeats held back meanwhile counted in the next line; an answer that lists an
upstream more than once, or as both a primary and a standby (see ``Endpoints.of``
for which entry is used), with the same limit.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from .._core import ConfigError, Pool, Upstream
from .._core._turns import taking_turns

log = logging.getLogger("clientlb.discovery")

TIERS = ("primary", "standby")
#: Seconds before the same failure or the same complaint about an answer is
#: logged again (the repeats meanwhile are counted, and the count logged then).
LOG_INTERVAL = 60.0
#: Upstreams named in one log line; the rest are counted.
LOG_NAMES = 10
#: Distinct lines remembered before those past their interval are forgotten.
LIMITER_SIZE = 256
#: Members a feed adds or removes per hold of the pool's lock, before it lets
#: requests run (about 0.5 ms of work).
UPDATE_STEP = 250
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class InvalidAnswer(Exception):
    """The registry answered, but with something that is not a set of endpoints."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    """One answer from a registry: the upstreams of each tier.

    ``duplicates`` and ``clashes`` say what ``of()`` collapsed, one line per URL
    (``"http://a:1 (upstreams[0], upstreams[3])"``); they do not take part in
    comparisons.
    """

    primaries: tuple[Upstream, ...] = ()
    standbys: tuple[Upstream, ...] = ()
    duplicates: tuple[str, ...] = field(default=(), compare=False)
    clashes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def of(
        cls, entries: Iterable[tuple[Upstream, bool]], origins: Sequence[str] | None = None
    ) -> Endpoints:
        """From ``(upstream, is_standby)`` pairs, in a stable (sorted) order, one
        entry per URL: an upstream listed more than once in one tier keeps its
        first entry (and that entry's weight); one listed as both a primary and a
        standby is a primary. Both are recorded (``duplicates``, ``clashes``),
        naming each entry by ``origins[i]`` (default: its position)."""
        chosen: dict[str, tuple[Upstream, bool]] = {}
        repeated: dict[str, list[int]] = {}
        first: dict[str, int] = {}
        tiers: list[bool] = []
        for i, (upstream, standby) in enumerate(taking_turns(entries)):
            tiers.append(standby)
            key = upstream.key
            seen = chosen.get(key)
            if seen is None:
                chosen[key] = (upstream, standby)
                first[key] = i
                continue
            repeated.setdefault(key, [first[key]]).append(i)
            if seen[1] and not standby:
                chosen[key] = (upstream, standby)
        duplicates: list[str] = []
        clashes: list[str] = []
        for key, where in repeated.items():
            names = ", ".join(origins[i] if origins else f"entry {i}" for i in where)
            mixed = len({tiers[i] for i in where}) > 1
            (clashes if mixed else duplicates).append(f"{chosen[key][0].url} ({names})")
        ordered = sorted(chosen.values(), key=lambda e: e[0].key)
        return cls(
            tuple(up for up, standby in ordered if not standby),
            tuple(up for up, standby in ordered if standby),
            tuple(duplicates),
            tuple(clashes),
        )

    def __bool__(self) -> bool:
        return bool(self.primaries or self.standbys)

    def same_as(self, other: Endpoints | None) -> bool:
        """Same URLs, tiers, weights and connection limits."""

        def signature(e: Endpoints) -> tuple[object, ...]:
            return tuple((u.key, u.weight, u.max_connections) for u in e.primaries), tuple(
                (u.key, u.weight, u.max_connections) for u in e.standbys
            )

        return other is not None and signature(self) == signature(other)

    def __str__(self) -> str:
        return f"{len(self.primaries)} primaries, {len(self.standbys)} standbys"


def parse_entry(value: object, where: str) -> tuple[Upstream, bool]:
    """An endpoint from a registry: a URL, or ``{"url", "weight", "tier",
    "max_connections"}``."""
    try:
        if isinstance(value, str):
            return Upstream(value), False
        if isinstance(value, dict):
            unknown = set(value) - {"url", "weight", "tier", "max_connections"}
            if unknown:
                raise InvalidAnswer(f"{where}: unknown fields {sorted(unknown)}")
            tier = value.get("tier", "primary")
            if tier not in TIERS:
                raise InvalidAnswer(f"{where}: tier must be 'primary' or 'standby', got {tier!r}")
            upstream = Upstream(
                value.get("url", ""),
                value.get("weight", 1),
                max_connections=value.get("max_connections"),
            )
            return upstream, tier == "standby"
    except ConfigError as exc:
        raise InvalidAnswer(f"{where}: {exc}") from None
    raise InvalidAnswer(f"{where}: expected a URL or an object with a url, got {value!r}")


def positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(name, f"must be a number, got {value!r}")
    if value <= 0:
        raise ConfigError(name, f"must be > 0, got {value!r}")
    return float(value)


def _names(lines: Sequence[str]) -> str:
    shown = "; ".join(lines[:LOG_NAMES])
    more = len(lines) - LOG_NAMES
    return f"{shown}; and {more} more" if more > 0 else shown


class _Limiter:
    """Each distinct line at most once per ``interval`` seconds; the repeats held
    back are counted, and the count goes out with the line's next appearance."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self.said: dict[str, tuple[float, int]] = {}  # line -> (last logged, held since)

    def allow(self, line: str) -> int | None:
        """``None`` to hold ``line`` back, else how many of it were held back."""
        now = self.clock()
        last, held = self.said.get(line, (-math.inf, 0))
        if now - last < self.interval:
            self.said[line] = (last, held + 1)
            return None
        if len(self.said) >= LIMITER_SIZE:  # a registry inventing new errors forever
            for old in [k for k, (t, _) in self.said.items() if now - t >= self.interval]:
                del self.said[old]
        self.said[line] = (now, 0)
        return held

    def forget(self, prefix: str) -> int:
        """The condition behind these lines is over: say them at once next time.
        Returns how many of them were held back."""
        gone = [line for line in self.said if line.startswith(prefix)]
        return sum(self.said.pop(line)[1] for line in gone)


class Feed:
    """The decisions of one provider feeding one pool.

    ``publish(endpoints)`` applies an answer, ``failed(error)`` records a failure
    and returns the delay before the next try; ``apublish`` is ``publish`` for an
    event loop: it prepares the change in a worker thread and applies it in steps.
    ``clock`` times the log limits (``LOG_INTERVAL``).
    """

    def __init__(
        self,
        provider: Provider,
        pool: Pool,
        on_first_answer: Callable[[], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.pool = pool
        self._on_first_answer = on_first_answer
        self.applied: Endpoints | None = None
        self.state = "starting"
        self.failures = 0  # in a row
        self.answers = 0  # answers and failures seen, for tests and status pages
        self._said = _Limiter(LOG_INTERVAL, clock)

    def publish(self, endpoints: Endpoints) -> None:
        """The registry answered ``endpoints``: apply them unless they are empty, in
        steps of ``UPDATE_STEP`` members; between two steps other threads get the
        pool's lock (and the interpreter: ``sleep(0)``)."""
        for _ in self._steps(endpoints, UPDATE_STEP):
            time.sleep(0)

    async def apublish(self, endpoints: Endpoints) -> None:
        """``publish`` from an event loop: the change is prepared in a worker thread
        (the comparison, the checks, the new members), then applied in steps of
        ``UPDATE_STEP`` members with a checkpoint after each."""
        steps = self._steps(endpoints, UPDATE_STEP)
        await anyio.to_thread.run_sync(next, steps)
        for _ in steps:
            await anyio.sleep(0)

    def _steps(self, endpoints: Endpoints, step: int) -> Iterator[None]:
        """The decisions about one answer: it yields once the change is prepared
        (the pool untouched so far), then after each step of the pool's change."""
        self.answers += 1
        empty = not endpoints and not self.provider.allow_empty
        steps = None
        if not empty:
            self._complain(endpoints)
            if not endpoints.same_as(self.applied):
                steps = self.pool.update_steps(
                    endpoints.primaries,
                    endpoints.standbys,
                    drain_timeout=self.provider.drain_timeout,
                    step=step,
                )
        yield
        if empty:
            self._enter("empty", "answered no endpoints")
            self._answered()
            return
        for _ in steps or ():
            yield
        self._settle(endpoints, changed=steps is not None)

    def _settle(self, endpoints: Endpoints, changed: bool) -> None:
        self._enter("ok", f"answering: {endpoints}")
        self.failures = 0
        if changed and self.applied is not None:
            log.info("%r: now %s", self.provider, endpoints)
        self.applied = endpoints
        self._answered()

    def _complain(self, endpoints: Endpoints) -> None:
        """Say what the answer listed twice; the pool gets each upstream once."""
        for lines, what in (
            (endpoints.duplicates, "upstreams listed more than once, each used once (first entry)"),
            (endpoints.clashes, "upstreams listed as both primary and standby, used as primaries"),
        ):
            if lines:
                self._warn(f"{self.provider!r}: {what}: {_names(lines)}")
            else:
                self._said.forget(f"{self.provider!r}: {what}")

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
        """Log a change of state, and each distinct failure (rate-limited)."""
        previous, self.state = self.state, state
        if state == "ok":
            if previous != "ok":
                held = self._said.forget(f"{self.provider!r}: registry ")
                if previous != "starting":
                    more = f"; {held} repeated failures were not logged" if held else ""
                    log.info("%r: registry is back (%s)%s", self.provider, detail, more)
            return
        kept = str(self.applied) if self.applied is not None else "the configured upstreams"
        line = f"{self.provider!r}: registry {state}: {detail}"
        # an invalid answer is told by its text; an unreachable registry by its
        # error, whatever the timings or counts in the message
        key = _NUMBER.sub("#", line) if state == "unreachable" else line
        self._warn(line, f"; keeping {kept}", key)

    def _warn(self, line: str, tail: str = "", key: str | None = None) -> None:
        """Log ``line`` (with ``tail``, which may change without making it another
        line) unless the same ``key`` (default: the line) was logged less than
        ``LOG_INTERVAL`` seconds ago."""
        held = self._said.allow(line if key is None else key)
        if held is not None:
            more = f" ({held} times more since it was last logged)" if held else ""
            log.warning("%s%s%s", line, tail, more)


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

    An answer that lists an upstream twice is applied with the upstream once (its
    first entry, so its first weight); one that lists it as both a primary and a
    standby makes it a primary. Either is logged as a warning naming the URLs, as
    is each distinct failure (at most once per ``LOG_INTERVAL`` seconds each).
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
        """The async twin of ``poll()``: pass answers to ``await feed.apublish()``,
        and parse anything large in a worker thread (``anyio.to_thread``), so that
        the event loop keeps serving requests meanwhile."""
        raise NotImplementedError
