"""``Pool``: the upstreams of one service, in tiers, with their health.

The pool is where every balancing and health decision is made, once, for every
transport and proxy that shares it. It is safe to share between threads and
event loops: a short critical section guards each decision, and nothing inside it
blocks or awaits.

The pool is the facade and does the per-request work: ``pick()`` hands out a
``Lease``, and the lease's ``responded()``/``finish()`` settle it. Who is in which
tier and who serves is the ``Roster``'s (``_membership.py``); every state change
and its timers are the ``HealthRules``' (``_health_rules.py``); the states are a
table (``_state.py``); recent latencies are a ``LatencyWindow`` (``_latency.py``).
"""

from __future__ import annotations

import random as _random
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

from ._algorithms import Algorithm, make_algorithm
from ._budget import BudgetLedger
from ._errors import ConfigError
from ._health_rules import HealthRules
from ._latency import LatencyWindow
from ._lease import Lease as Lease
from ._member import (
    PRIMARY,
    STANDBY,
    Member,
    MemberState,
    member_state,
    snapshot_row,
    snapshot_values,
)
from ._membership import Roster
from ._picking import NO_EXCLUSIONS, Picking
from ._policies import HealthCheck, OutlierDetection, RetryPolicy
from ._pool_checks import check_pool_options, discovery_providers
from ._slots import AT_LIMIT, Saturated, Slots, SlotWait
from ._state import Health
from ._subset import Subset
from ._turns import taking_turns
from ._updates import apply_in_steps, check_update, refresh_tables
from ._upstream import Upstream, as_upstream, reusing

DEFAULT_OUTLIER = OutlierDetection()
#: Membership changes ``update_steps()`` applies per hold of the pool's lock.
UPDATE_STEP = 250

Listener = Callable[[str, MemberState], None]
#: What the package's own watchers (``Pool._watch``) hear of each active check
#: result, beside the changes of state that every listener hears.
CHECK_PASSED, CHECK_FAILED = "check-passed", "check-failed"


class Pool(Picking):
    """The upstreams of one service and every decision about them.

    **Parameters:**

    * **upstreams** - primary upstreams: URLs or ``Upstream`` objects.
    * **standbys** - passive upstreams, used only while no primary can serve.
    * **algorithm** - an algorithm name (``clientlb.ALGORITHMS``) or object.
    * **outlier** - passive ejection rules (``OutlierDetection``); ``None`` disables.
    * **retry** - the ``RetryPolicy`` that transports and proxies apply.
    * **slow_start** - seconds over which an added or re-admitted upstream ramps
      from ``slow_start_min_share`` of its weight to all of it (not with the
      hashing algorithms, which keep each key on its upstream).
    * **fail_back_after** - seconds a recovered primary must stay healthy before
      traffic leaves the standbys for it.
    * **failure_penalty** - the latency, in seconds, that a failed attempt counts
      as at least, so that an upstream failing fast never looks quick.
    * **panic_threshold** - the share (0.0-1.0) of a tier's upstreams that must be
      available for the tier to serve on its own, as Envoy's
      ``healthy_panic_threshold``. Draining upstreams do not count; slow-starting
      ones count as available; ejected, held (fail-back) and down ones do not.
      The first tier at or above it serves; when no tier is, the pool panics and
      balances over every upstream of every tier that is not down by active
      checks and not draining (ejected ones included) rather than overloading
      the few left. Upstreams that active checks hold down are never part of
      panic: when every upstream is down (or draining), nothing can serve and
      ``pick()`` raises ``NoUpstream`` at once. The default, 0.0, panics only when
      no upstream of any tier is available.
    * **max_connections** - requests each upstream may have in flight at once,
      for upstreams that give no ``max_connections`` of their own; ``None`` (the
      default) for no limit. An upstream at its limit is skipped by every
      algorithm (the hashing ones go on to the key's next upstream, standbys
      take the overflow of full primaries); being full is no failure and no
      reason to panic. See ``clientlb._core._slots``.
    * **subset** - a ``Subset``: balance over a few of the primaries only, the
      same number of clients on each (for fleets of many clients over many
      upstreams, where spreading over all leaves each client blind). The pool
      keeps the whole list it was given and subsets it again at every change.
    * **max_pending** - requests that may wait for a slot when every upstream
      that could serve is full (each waits up to its own time budget); beyond
      it they fail at once (``NoUpstreamAvailable``, a proxy's 503). The
      default, 0, fails fast: Envoy queues 1,024 (``max_pending_requests``)
      but beside a ``max_connections`` of 1,024 it rarely fills; a limit set
      here is deliberate and usually small, and a queue in front of it turns
      overload into latency while the caller's retries already act as one.
    * **health_check** - a ``HealthCheck`` policy: the transport or proxy that owns
      the pool runs the checks (the core only counts their results).
    * **discovery** - a ``clientlb.discovery`` provider (or a list) that keeps the
      membership current; run, like the checks, by the pool's owner.
    * **allow_empty** - accept no upstreams (discovery will add them); implied by
      ``discovery``.
    * **clock**, **rng** - injected time and randomness, for tests
      (``clientlb.testing.FakeClock``).
    """

    def __init__(
        self,
        upstreams: Iterable[str | Upstream] = (),
        standbys: Iterable[str | Upstream] = (),
        algorithm: str | Algorithm = "round_robin",
        *,
        outlier: OutlierDetection | None = DEFAULT_OUTLIER,
        retry: RetryPolicy | None = None,
        slow_start: float = 0.0,
        slow_start_min_share: float = 0.1,
        fail_back_after: float = 0.0,
        failure_penalty: float = 1.0,
        panic_threshold: float = 0.0,
        health_check: HealthCheck | None = None,
        discovery: Any = None,
        max_connections: int | None = None,
        max_pending: int = 0,
        subset: Subset | None = None,
        allow_empty: bool = False,
        clock: Callable[[], float] = time.monotonic,
        rng: _random.Random | None = None,
    ) -> None:
        check_pool_options(
            upstreams=upstreams,
            standbys=standbys,
            outlier=outlier,
            retry=retry,
            slow_start=slow_start,
            slow_start_min_share=slow_start_min_share,
            fail_back_after=fail_back_after,
            failure_penalty=failure_penalty,
            panic_threshold=panic_threshold,
            health_check=health_check,
            max_connections=max_connections,
            max_pending=max_pending,
            allow_empty=allow_empty,
            clock=clock,
            rng=rng,
        )
        if subset is not None and not isinstance(subset, Subset):
            raise ConfigError("subset", f"expected a Subset, got {subset!r}")
        self.subset = subset
        self._universe: list[Upstream] = []
        if subset is not None:
            upstreams = self._subset_of(upstreams)
        discovery = discovery_providers(discovery)
        self.algorithm = make_algorithm(algorithm)
        self._tracks_load = self.algorithm.tracks_load  # read on every request
        self.outlier = outlier
        self.retry = retry if retry is not None else RetryPolicy()
        self.slow_start = float(slow_start)
        self.slow_start_min_share = min(1.0, float(slow_start_min_share))
        self.fail_back_after = float(fail_back_after)
        self.failure_penalty = float(failure_penalty)
        self.panic_threshold = float(panic_threshold)
        self.health_check = health_check
        self.discovery = discovery
        self._runner: object = None
        allow_empty = allow_empty or discovery is not None
        self.clock = clock
        self.rng = rng if rng is not None else _random.Random()
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._watchers: list[Callable[[str, Member], None]] = []
        self._serving_watchers: list[Callable[[str, str], None]] = []
        self.max_connections = max_connections
        self.max_pending = max_pending
        self._slots = Slots(max_pending)
        self._full = self._slots.full  # read on every request (never replaced)
        self._roster = roster = Roster(
            self.algorithm,
            self.rng,
            clock,
            self.panic_threshold,
            self._emit,
            self._slots,
            max_connections,
        )
        self._tiers = roster.tiers
        roster.on_serving = self._serving_changed
        self._rules = HealthRules(
            roster,
            self._emit,
            outlier=outlier,
            # hashing keeps each key on its upstream: no share to ramp
            slow_start=0.0 if self.algorithm.hashes else self.slow_start,
            fail_back_after=self.fail_back_after,
            failure_penalty=self.failure_penalty,
        )
        self._budget = BudgetLedger(self.retry.budget) if self.retry.budget else None
        self._latencies = LatencyWindow()
        for tier, field, values in (
            (PRIMARY, "upstreams", upstreams),
            (STANDBY, "standbys", standbys),
        ):
            for value in values:
                roster.admit(roster.create(as_upstream(value, field), tier, field))
        if not roster and not allow_empty:
            raise ConfigError("upstreams", "a pool needs at least one upstream")

    # -- membership -------------------------------------------------------------

    def _subset_of(self, upstreams: Iterable[str | Upstream]) -> list[Upstream]:
        """This pool's subset of ``upstreams``, kept whole as the pool's universe."""
        assert self.subset is not None
        parse = reusing(self._universe)
        universe: list[Upstream] = []
        keys: set[str] = set()
        for value in taking_turns(upstreams):
            up = parse(value, "upstreams")
            if up.key in keys:
                raise ConfigError("upstreams", f"duplicate upstream {up.url}")
            keys.add(up.key)
            universe.append(up)
        chosen = self.subset.choose(universe)
        self._universe = universe
        return chosen

    def _standbys(self) -> list[Upstream]:
        with self._lock:
            members = self._tiers[STANDBY].members
            return [m.upstream for m in members if m.health is not Health.DRAINING]

    def add(self, upstream: str | Upstream, *, standby: bool = False) -> None:
        """Add an upstream at run time; it ramps up under slow start."""
        if self.subset is not None and not standby:
            self.update([*self._universe, as_upstream(upstream)], self._standbys())
            return
        with self._lock:
            field = "standbys" if standby else "upstreams"
            tier = STANDBY if standby else PRIMARY
            member = self._roster.create(as_upstream(upstream, field), tier, field)
            self._rules.admit(member, True, self.clock())
        self._refresh_tables()

    def remove(self, upstream: str | Upstream) -> None:
        """Remove an upstream at once; its requests in flight still finish."""
        key = as_upstream(upstream).key
        if self.subset is not None and any(u.key == key for u in self._universe):
            self.update([u for u in self._universe if u.key != key], self._standbys())
            with self._lock:
                member = self._roster.get(key)
                if member is not None and member.tier == PRIMARY:
                    self._roster.drop(member)  # at once, as without a subset
            self._refresh_tables()
            return
        with self._lock:
            self._roster.drop(self._roster.lookup(upstream))
        self._refresh_tables()

    def drain(self, upstream: str | Upstream, timeout: float | None = None) -> None:
        """Stop picking ``upstream``; remove it when its last request ends (or after
        ``timeout`` seconds)."""
        with self._lock:
            self._rules.drain(self._roster.lookup(upstream), timeout, self.clock())
        self._refresh_tables()

    def _refresh_tables(self) -> None:
        """After a change of membership: build the hashing tables it made stale,
        in the caller's thread and apart from the lock (``refresh_tables()``)."""
        if self.algorithm.builds_apart:
            for _ in refresh_tables(self._lock, self._roster):
                pass

    def update(
        self,
        upstreams: Iterable[str | Upstream],
        standbys: Iterable[str | Upstream] = (),
        *,
        drain_timeout: float | None = 30.0,
    ) -> None:
        """Make the membership equal to the given lists in one atomic change.

        Survivors keep their statistics (their weight follows the new value), new
        upstreams are added under slow start, and missing ones are drained. O(n)
        in the size of the pool and of the lists; see ``update_steps()`` for the
        same change in short holds of the pool's lock. A hashing table is built
        after the lock is released: picks use the last one until then.
        """
        if self.subset is not None:
            upstreams = self._subset_of(upstreams)
        wanted, fresh = check_update(self._roster.by_key, upstreams, standbys)
        steps = apply_in_steps(
            self._lock, self._rules, self.clock, wanted, fresh, drain_timeout, sys.maxsize, False
        )
        with self._lock:
            for _ in steps:
                pass
        self._refresh_tables()

    def update_steps(
        self,
        upstreams: Iterable[str | Upstream],
        standbys: Iterable[str | Upstream] = (),
        *,
        drain_timeout: float | None = 30.0,
        step: int = UPDATE_STEP,
    ) -> Iterator[int]:
        """``update()`` in steps, for a caller that must keep the pool serving while
        it changes thousands of members (discovery does this).

        The lists are checked at once (``ConfigError``, and nothing changes), and
        the new members are built before the lock is taken. Each ``next()`` then
        applies at most ``step`` changes under the pool's lock and yields the
        number applied so far; the driver lets other work run between steps (an
        event loop's checkpoint, a thread's ``sleep(0)``). Newcomers are admitted
        before anyone leaves, so a pool being replaced never goes through an empty
        state; picks between steps see a mix of the old and the new membership.
        ``step=0`` applies everything in one step. A driver that stops early
        leaves the change part-applied; calling again with the same lists ends it.

        With a hashing algorithm, the new table is built apart from the lock after
        the joins and again at the end, yielding the same number every half
        millisecond of the build or so; picks meanwhile use the last table, minus
        the upstreams that left.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ConfigError("step", f"must be a whole number >= 0, got {step!r}")
        if self.subset is not None:
            upstreams = self._subset_of(upstreams)
        wanted, fresh = check_update(self._roster.by_key, upstreams, standbys)
        return apply_in_steps(
            self._lock, self._rules, self.clock, wanted, fresh, drain_timeout, step or sys.maxsize
        )

    # -- health -----------------------------------------------------------------

    def report_check(
        self, upstream: str | Upstream, passed: bool, *, rise: int = 1, fall: int = 1
    ) -> None:
        """Record one active health check result (HAProxy's rise/fall counting)."""
        with self._lock:
            member = self._roster.get(as_upstream(upstream).key)
            if member is not None:
                self._rules.check(member, passed, rise, fall, self.clock())
                event = CHECK_PASSED if passed else CHECK_FAILED
                for watcher in self._watchers:
                    watcher(event, member)

    @property
    def probing(self) -> bool:
        """Whether upstreams ejected while refusing connections are probed (see
        ``OutlierDetection.probe_after``)."""
        return self.outlier is not None and self.outlier.probe_after is not None

    @property
    def has_background_work(self) -> bool:
        """Whether the pool's owner has work to run beside the requests: active
        checks, discovery, or connect probes of ejected upstreams."""
        return self.probing or self.health_check is not None or self.discovery is not None

    def probes_due(self) -> tuple[list[Upstream], float]:
        """Connect probes to make now, and in how many seconds the next one is due
        (``inf``: none is scheduled).

        Each upstream is handed out once: report what the probe found with
        ``report_probe()``, which schedules the next one if it failed. Only
        upstreams ejected while refusing connections are probed (see
        ``OutlierDetection.probe_after``); the pool's owner makes the probes, as
        it runs the active checks."""
        with self._lock:
            now = self._current()
            due, following = self._rules.probes_due(now)
            return [m.upstream for m in due], following - now

    def report_probe(self, upstream: str | Upstream, connected: bool) -> None:
        """Record a connect probe: ``connected`` re-admits the ejected upstream."""
        with self._lock:
            member = self._roster.get(as_upstream(upstream).key)
            if member is not None:
                self._rules.probed(member, connected, self.clock())

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock, in case a thread of the parent held it."""
        self._lock = threading.RLock()

    def claim_runner(self, owner: object) -> bool:
        """Let one owner at a time run this pool's checks and discovery: a pool
        shared by several transports and proxies is checked once, not once each.
        True when ``owner`` holds the claim (now or already); the others retry
        after the holder's ``release_runner``."""
        with self._lock:
            if self._runner is None:
                self._runner = owner
            return self._runner is owner

    def release_runner(self, owner: object) -> None:
        with self._lock:
            if self._runner is owner:
                self._runner = None

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event, state)`` on every health or membership change:
        ``event`` is the new state's name (``"ejected"``, ``"down"``,
        ``"healthy"``, ``"slow-start"``, ...) or ``"removed"``, and ``state`` a
        ``MemberState`` reading of the upstream right after the change.

        Listeners run inside the change, under the pool's (re-entrant) lock, so
        they see each change in order: keep them short, and hand anything slow or
        blocking to another thread."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _watch(self, watcher: Callable[[str, Member], None]) -> None:
        """``subscribe()`` for the package's own code: ``watcher`` gets the live
        member (read it, never change it), under the pool's lock."""
        self._watchers.append(watcher)

    def _watch_serving(self, watcher: Callable[[str, str], None]) -> None:
        """Call ``watcher(before, now)`` when who serves changes: a tier's name
        (``"primary"``, ``"standby"``), ``"panic"`` or ``"none"``; noticed when
        the candidates are next rebuilt, under the pool's lock."""
        self._serving_watchers.append(watcher)

    def _serving_changed(self, before: str, now: str) -> None:
        for watcher in self._serving_watchers:
            watcher(before, now)

    def _unwatch(self, watcher: Callable[[str, Member], None]) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def _emit(self, event: str, member: Member) -> None:
        if self._slots.waiters:  # a change of health may give them somewhere to go
            self._slots.wake()
        for watcher in self._watchers:
            watcher(event, member)
        if self._listeners:
            state = member.reading(self.clock())
            for listener in self._listeners:
                listener(event, state)

    # -- picking ----------------------------------------------------------------

    def _serving_tier(self) -> str:
        """Who serves as of the last change: ``"primary"``, ``"standby"``,
        ``"panic"`` (no tier may serve on its own) or ``"none"``. O(1) and
        current inside a change, so watchers may call it (under the lock)."""
        roster = self._roster
        for tier in (PRIMARY, STANDBY):
            if roster.sufficient(tier):
                return roster.tiers[tier].name
        live = len(roster) - roster.count(Health.DOWN) - roster.count(Health.DRAINING)
        return "panic" if live else "none"

    @property
    def panicking(self) -> bool:
        """No tier may serve on its own (see ``panic_threshold``) and the pool
        balances over every upstream neither down nor draining."""
        with self._lock:
            self._current()
            return self._roster.panic is not None

    def pick(
        self,
        key: str | None = None,
        exclude: Collection[Member | MemberState | Upstream] = NO_EXCLUSIONS,
        *,
        last_resort: bool = False,
        prefer: str | None = None,
        explain: bool = False,
    ) -> Lease:
        """Choose an upstream for one attempt; raise ``NoUpstream`` if none may serve.

        ``key`` feeds the hashing algorithms; ``exclude`` lists the upstreams this
        request already tried (``lease.upstream``, a ``MemberState``, or a lease's
        member). With ``last_resort`` (a retry that found every available
        upstream tried), an ejected one that was not tried is better than none:
        the one with the fewest requests in flight, as Envoy's panic would send
        there anyway, but for this request alone. Upstreams down by active
        checks are never picked. Upstreams at their ``max_connections`` are
        skipped as if excluded; when nothing else could serve, ``pick()``
        raises ``Saturated`` (a ``NoUpstream``; see ``wait_for_slot()``).

        ``prefer`` is the key (``Upstream.key``) of the upstream a client is
        pinned to (a sticky cookie): it is the pick if it may serve now (see
        ``_pinned``: not at its limit either), and the algorithm picks as usual
        if not.

        The lease says why (``reason``: ``"balanced"``, ``"failover"``,
        ``"sticky"``, ``"panic"`` or ``"last resort"``); with ``explain`` it
        also lists the candidates the algorithm weighed, with their scores
        (``Lease.candidates``: a pass over the tier, so only when asked).
        """
        with self._lock:
            return self._choose(key, exclude, last_resort, prefer, explain, self.clock())

    def wait_for_slot(self, wake: Callable[[], None], seen: int) -> SlotWait:
        """Wait for a slot after ``pick()`` raised ``Saturated``: ``seen`` is its
        ``version``; ``wake()`` is called (under the pool's lock, from any
        thread, so it must not block) whenever a slot may have freed, at once
        if one did since that pick. Pick again after each call; ``close()``
        the wait when done (it is a context manager), or ``expired()`` when the
        request's time ran out. Raises ``Saturated`` (and counts a rejection)
        when ``max_pending`` requests wait already. The waiting itself is the
        caller's: see ``clientlb._slots``."""
        with self._lock:
            slots = self._slots
            if len(slots.waiters) >= slots.max_pending:
                slots.rejected += 1
                pending = slots.max_pending
                raise Saturated(
                    f"{AT_LIMIT}, and {pending} request"
                    f"{'' if pending == 1 else 's'} (max_pending) wait already",
                    slots.version,
                )
            waiter = SlotWait(slots, self._lock, wake)
            slots.waiters[waiter] = None
            if slots.version != seen:
                wake()
            return waiter

    def _member_keys(self) -> tuple[int, list[str]]:
        """The membership's generation and every member's upstream key."""
        with self._lock:
            roster = self._roster
            return roster.generation, list(roster.by_key)

    # -- retries and hedges -----------------------------------------------------

    def note_request(self) -> None:
        """Count one client request towards the retry budget."""
        if self._budget is not None:
            with self._lock:
                self._budget.request(self.clock())

    def take_retry(self) -> bool:
        """Draw one retry from the budget; ``False`` when it is spent."""
        if self._budget is None:
            return True
        with self._lock:
            return self._budget.try_retry(self.clock())

    def has_retry(self) -> bool:
        """Whether the budget has a retry left (taking none)."""
        if self._budget is None:
            return True
        with self._lock:
            return self._budget.has_retry(self.clock())

    def latency_quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0.95 for the p95) of the pool's recent response
        latencies, in seconds: the time to response headers of the last 1,024
        successful attempts at any upstream (failures are not latencies). ``None``
        until 20 are in. Cheap enough to ask on every request: the window is
        sorted at most once per 100 ms of the pool's clock."""
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 1:
            raise ValueError(f"a quantile is a number from 0 to 1, got {q!r}")
        window = self._latencies
        now = self.clock()
        if window.stale(now):
            with self._lock:
                if window.stale(now):
                    window.refresh(now)
        return window.quantile(q)

    # -- reading ----------------------------------------------------------------

    @property
    def members(self) -> Sequence[MemberState]:
        """Every upstream as it is now (primaries first, in configuration order):
        readings, which later changes do not alter."""
        with self._lock:
            now = self._current()
            values = [snapshot_values(m) for m in self._roster]
        return [member_state(v, now) for v in taking_turns(values)]

    def _live_members(self) -> list[Member]:
        """The live members, for the package's own code (health checks): read
        them, never change them."""
        with self._lock:
            return list(self._roster)

    def __len__(self) -> int:
        return len(self._roster)

    def snapshot(self) -> dict[str, Any]:
        """Per upstream: url, tier, state, in-flight, latency, requests, failures,
        max_connections; for the pool: the default ``max_connections``,
        ``max_pending``, the requests waiting for a slot now (``pending``), and
        those turned away because every upstream was full (``rejected``: no room
        to wait, or their wait ran out); with a ``Subset``, its fields and how
        many upstreams it was taken ``of``.

        One consistent reading: the lock is held only to copy each member's fields
        (about 0.3 us per member); the rows are built after it is released."""
        with self._lock:
            now = self._current()
            panic = self._roster.panic is not None
            values = [v for t in self._tiers for v in map(snapshot_values, t.members)]
            slots = self._slots
            limits = {
                "max_connections": self.max_connections,
                "max_pending": slots.max_pending,
                "pending": slots.pending,
                "rejected": slots.rejected,
            }
        subset = self.subset
        of = {} if subset is None else {"subset": {**asdict(subset), "of": len(self._universe)}}
        return {
            "algorithm": self.algorithm.name,
            "panic": panic,
            **limits,
            **of,
            "upstreams": [snapshot_row(v, now) for v in taking_turns(values)],
        }
