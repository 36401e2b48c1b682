"""``Pool``: the upstreams of one service, in tiers, with their health.

The pool is where every balancing and health decision is made, once, for every
transport and proxy that shares it. It is safe to share between threads and
event loops: a short critical section guards each decision, and nothing inside it
blocks or awaits.

Tiers: primaries serve while at least one of them is available; standbys serve
only when none is; if no member of any tier is available the pool panics and
balances over all of them rather than failing every request.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random as _random
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ._algorithms import Algorithm, make_algorithm
from ._budget import BudgetLedger
from ._errors import ConfigError, NoUpstream
from ._member import PRIMARY, STANDBY, TIER_NAMES, Member, snapshot_row, snapshot_values
from ._outcome import FAILURES, Outcome
from ._outlier import failing, finished, slow_members
from ._policies import HealthCheck, OutlierDetection, RetryPolicy, _positive, flag, seconds
from ._state import Event, Health, transition
from ._turns import taking_turns
from ._upstream import Upstream, as_upstream

GATEWAY_ERRORS = frozenset({502, 503, 504})
_NO_EXCLUSIONS: frozenset[Member] = frozenset()
DEFAULT_OUTLIER = OutlierDetection()
#: Membership changes ``update_steps()`` applies per hold of the pool's lock.
UPDATE_STEP = 500


class _Tier:
    __slots__ = ("algorithm", "available", "ejected", "members", "name", "unavailable")

    def __init__(self, name: str, algorithm: Algorithm) -> None:
        self.name = name
        self.algorithm = algorithm
        # in configuration order, newcomers last; a dict so that removal is O(1)
        self.members: dict[Member, None] = {}
        self.available: list[Member] = []
        self.ejected = 0  # members in Health.EJECTED, for the ejection cap
        # Hashing algorithms hold every member, so that an ejection does not move
        # other members' keys; the ones out are excluded at pick time instead.
        self.unavailable: frozenset[Member] = frozenset()


class Lease:
    """One attempt at one upstream, from ``pick()`` until ``finish()``.

    The shell reports ``responded(status)`` when response headers arrive (this
    records latency and the status for outlier detection) and ``finish()`` when the
    response body is closed or the attempt failed (this releases the in-flight
    slot). ``finish()`` may be called more than once; only the first counts.
    """

    __slots__ = ("_pool", "done", "elapsed", "member", "started", "status")

    def __init__(self, pool: Pool, member: Member, started: float) -> None:
        self._pool = pool
        self.member = member
        self.started = started
        self.status: int | None = None
        self.elapsed: float | None = None
        self.done = False

    @property
    def upstream(self) -> Upstream:
        return self.member.upstream

    def responded(self, status: int) -> None:
        """Response headers arrived with ``status``."""
        if self.status is None and not self.done:
            self._pool._responded(self, status)

    def finish(self, outcome: Outcome = Outcome.SUCCESS) -> None:
        """The attempt is over: body closed (``SUCCESS``), failed, or cancelled."""
        if not self.done:
            self._pool._finish(self, outcome)

    def __repr__(self) -> str:
        return f"<Lease {self.member.upstream.key} done={self.done}>"


class Pool:
    """The upstreams of one service and every decision about them.

    **Parameters:**

    * **upstreams** - primary upstreams: URLs or ``Upstream`` objects.
    * **standbys** - passive upstreams, used only while no primary can serve.
    * **algorithm** - an algorithm name (``clientlb.ALGORITHMS``) or object.
    * **outlier** - passive ejection rules (``OutlierDetection``); ``None`` disables.
    * **retry** - the ``RetryPolicy`` that transports and proxies apply.
    * **slow_start** - seconds over which an added or re-admitted upstream ramps
      from ``slow_start_min_share`` of its weight to all of it.
    * **fail_back_after** - seconds a recovered primary must stay healthy before
      traffic leaves the standbys for it.
    * **failure_penalty** - the latency, in seconds, that a failed attempt counts
      as at least, so that an upstream failing fast never looks quick.
    * **health_check** - a ``HealthCheck`` policy: the transport or proxy that owns
      the pool runs the checks (the core only counts their results).
    * **discovery** - a ``clientlb.discovery`` provider (or a list) that keeps the
      membership current; run, like the checks, by the pool's owner.
    * **allow_empty** - accept no upstreams (discovery will add them); implied by
      ``discovery``.
    * **clock**, **rng** - injected time and randomness, for tests.
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
        health_check: HealthCheck | None = None,
        discovery: Any = None,
        allow_empty: bool = False,
        clock: Callable[[], float] = time.monotonic,
        rng: _random.Random | None = None,
    ) -> None:
        for name, values in (("upstreams", upstreams), ("standbys", standbys)):
            if isinstance(values, str | bytes | Upstream) or not isinstance(values, Iterable):
                raise ConfigError(name, f"expected a list of URLs, got {values!r}")
        seconds("slow_start", slow_start, zero_ok=True)
        _positive("slow_start_min_share", slow_start_min_share)
        seconds("fail_back_after", fail_back_after, zero_ok=True)
        seconds("failure_penalty", failure_penalty, zero_ok=True)
        flag("allow_empty", allow_empty)
        if outlier is not None and not isinstance(outlier, OutlierDetection):
            raise ConfigError("outlier", f"expected OutlierDetection or None, got {outlier!r}")
        if not callable(clock):
            raise ConfigError("clock", f"expected a callable returning seconds, got {clock!r}")
        if rng is not None and not isinstance(rng, _random.Random):
            raise ConfigError("rng", f"expected random.Random or None, got {rng!r}")

        def _provider(value: object) -> bool:  # a clientlb.discovery provider, duck-typed
            return callable(getattr(value, "run", None)) and callable(getattr(value, "arun", None))

        if discovery is not None and not _provider(discovery):
            if isinstance(discovery, str | bytes | Mapping) or not isinstance(discovery, Iterable):
                raise ConfigError("discovery", f"expected a discovery provider, got {discovery!r}")
            discovery = tuple(discovery)  # an iterator would be spent by the first owner
            for provider in discovery:
                if not _provider(provider):
                    raise ConfigError(
                        "discovery", f"expected a discovery provider, got {provider!r}"
                    )
        self.algorithm = make_algorithm(algorithm)
        self._tracks_load = self.algorithm.tracks_load  # read on every request
        self.outlier = outlier
        self.retry = retry if retry is not None else RetryPolicy()
        if not isinstance(self.retry, RetryPolicy):
            raise ConfigError("retry", f"expected RetryPolicy, got {retry!r}")
        self.slow_start = float(slow_start)
        self.slow_start_min_share = min(1.0, float(slow_start_min_share))
        self.fail_back_after = float(fail_back_after)
        self.failure_penalty = float(failure_penalty)
        if health_check is not None and not isinstance(health_check, HealthCheck):
            raise ConfigError("health_check", f"expected HealthCheck or None, got {health_check!r}")
        self.health_check = health_check
        self.discovery = discovery
        self._runner: object = None
        allow_empty = allow_empty or discovery is not None
        self.clock = clock
        self.rng = rng if rng is not None else _random.Random()
        self._lock = threading.RLock()
        self._members: dict[str, Member] = {}
        self._tiers = (
            _Tier(TIER_NAMES[PRIMARY], self.algorithm.bind(self.rng, clock)),
            _Tier(TIER_NAMES[STANDBY], self.algorithm.bind(self.rng, clock)),
        )
        self._panic: Algorithm | None = None
        self._dirty = True
        self._next_timer = math.inf
        self._timers: list[tuple[float, int, Member]] = []  # a heap: (when, id, member)
        self._timer_ids = itertools.count()
        self._budget = BudgetLedger(self.retry.budget) if self.retry.budget else None
        self._listeners: list[Callable[[str, Member], None]] = []
        self._latency_marks: dict[Member, int] = {}  # finished requests at admission
        latency_rule = outlier is not None and outlier.latency_factor is not None
        self._latency_due = 0.0 if latency_rule else math.inf
        for value in upstreams:
            self._insert(as_upstream(value, "upstreams"), PRIMARY, "upstreams", ramp=False)
        for value in standbys:
            self._insert(as_upstream(value, "standbys"), STANDBY, "standbys", ramp=False)
        if not self._members and not allow_empty:
            raise ConfigError("upstreams", "a pool needs at least one upstream")

    # -- membership -------------------------------------------------------------
    #
    # Every change here is O(1) per member (tiers are insertion-ordered dicts), so
    # a change of k members costs O(k), plus one O(n) pass for ``update()``. The
    # algorithms rebuild their index from the tiers on the next pick, in O(n).

    def _insert(self, upstream: Upstream, tier: int, field: str, *, ramp: bool) -> Member:
        existing = self._members.get(upstream.key)
        if existing is not None:
            if existing.tier != tier:
                raise ConfigError(field, f"{upstream.url} is both a primary and a standby")
            raise ConfigError(field, f"duplicate upstream {upstream.url}")
        member = Member(upstream, tier)
        self._admit(member, ramp)
        return member

    def _admit(self, member: Member, ramp: bool) -> None:
        if ramp:
            self._start_ramp(member, self.clock())
        self._tiers[member.tier].members[member] = None
        self._members[member.upstream.key] = member
        self._dirty = True

    def add(self, upstream: str | Upstream, *, standby: bool = False) -> None:
        """Add an upstream at run time; it ramps up under slow start."""
        with self._lock:
            field = "standbys" if standby else "upstreams"
            self._insert(
                as_upstream(upstream, field), STANDBY if standby else PRIMARY, field, ramp=True
            )

    def remove(self, upstream: str | Upstream) -> None:
        """Remove an upstream at once; its requests in flight still finish."""
        with self._lock:
            self._drop(self._member(upstream))

    def drain(self, upstream: str | Upstream, timeout: float | None = None) -> None:
        """Stop picking ``upstream``; remove it when its last request ends (or after
        ``timeout`` seconds)."""
        with self._lock:
            member = self._member(upstream)
            self._drain(member, timeout)

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
        same change in short holds of the pool's lock.
        """
        steps = self.update_steps(upstreams, standbys, drain_timeout=drain_timeout, step=0)
        with self._lock:
            for _ in steps:
                pass

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
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ConfigError("step", f"must be a whole number >= 0, got {step!r}")
        wanted: dict[str, tuple[Upstream, int]] = {}
        for tier, field, values in (
            (PRIMARY, "upstreams", upstreams),
            (STANDBY, "standbys", standbys),
        ):
            for value in taking_turns(values):
                up = as_upstream(value, field)
                if up.key in wanted:
                    raise ConfigError(field, f"duplicate upstream {up.url}")
                wanted[up.key] = (up, tier)
        # built outside the lock: most of the cost of a large addition
        known = self._members
        fresh = {
            key: Member(up, tier)
            for key, (up, tier) in taking_turns(wanted.items())
            if key not in known
        }
        return self._update_steps(wanted, fresh, drain_timeout, step or sys.maxsize)

    def _update_steps(
        self,
        wanted: dict[str, tuple[Upstream, int]],
        fresh: dict[str, Member],
        drain_timeout: float | None,
        step: int,
    ) -> Iterator[int]:
        with self._lock:
            # slow start protects newcomers from a load others carry: none to protect
            # when no one serves (the first answer of a discovery, or a pool in panic)
            ramp = any(m.health is Health.HEALTHY and not m.until for m in self._members.values())
            leaving = [m for key, m in self._members.items() if key not in wanted]
        # joining and staying first, leaving last: the pool is never empty between steps
        work: Iterator[tuple[str, tuple[Upstream, int] | Member]] = itertools.chain(
            wanted.items(), ((m.upstream.key, m) for m in leaving)
        )
        done = 0
        while True:
            with self._lock:
                batch = 0
                for key, item in itertools.islice(work, step):
                    batch += 1
                    if isinstance(item, Member):
                        if self._members.get(key) is item and item.health is not Health.DRAINING:
                            self._drain(item, drain_timeout)
                    else:
                        self._apply(key, item, fresh, ramp)
                done += batch
            if batch < step:
                return
            yield done

    def _apply(
        self, key: str, target: tuple[Upstream, int], fresh: dict[str, Member], ramp: bool
    ) -> None:
        """One wanted upstream: add it, keep it (weight and tier follow), or bring a
        draining one back as a new member."""
        up, tier = target
        member = self._members.get(key)
        if member is not None and member.health is Health.DRAINING:
            self._drop(member)  # back in the registry: it returns as a new member
            member = None
        if member is None:
            self._admit(fresh.pop(key) if key in fresh else Member(up, tier), ramp)
            return
        if tier != member.tier:
            self._move(member, tier)
        if up.weight != member.weight:
            member.upstream = up
            member.weight = up.weight
            self._dirty = True

    def _move(self, member: Member, tier: int) -> None:
        """Move ``member`` to another tier (last in its order), statistics and all."""
        del self._tiers[member.tier].members[member]
        if member.health is Health.EJECTED:
            self._tiers[member.tier].ejected -= 1
            self._tiers[tier].ejected += 1
        member.tier = tier
        self._tiers[tier].members[member] = None
        self._dirty = True

    def _member(self, upstream: str | Upstream) -> Member:
        key = as_upstream(upstream).key
        member = self._members.get(key)
        if member is None:
            raise KeyError(f"no upstream {key} in this pool")
        return member

    def _drop(self, member: Member) -> None:
        if self._members.get(member.upstream.key) is not member:
            return
        del self._members[member.upstream.key]
        tier = self._tiers[member.tier]
        del tier.members[member]
        if member.health is Health.EJECTED:
            tier.ejected -= 1
        self._latency_marks.pop(member, None)
        self._dirty = True
        self._emit("removed", member)

    def _drain(self, member: Member, timeout: float | None) -> None:
        self._set_health(member, Event.DRAIN)
        member.until = 0.0  # an ejection or fail-back timer must not end the drain early
        if member.in_flight == 0:
            self._drop(member)
        elif timeout is not None:
            self._schedule(member, self.clock() + timeout)

    # -- health -----------------------------------------------------------------

    def _set_health(self, member: Member, event: Event) -> None:
        old = member.health
        new = transition(old, event)
        if new is old:
            return
        now = self.clock()
        member.health = new
        self._dirty = True
        if old is Health.EJECTED:
            self._tiers[member.tier].ejected -= 1
        if new is Health.EJECTED:
            self._tiers[member.tier].ejected += 1
            member.ejections += 1
        elif new is Health.HEALTHY:
            if old is Health.EJECTED:
                member.last_ejection_end = now
            member.until = 0.0
            # Judged afresh: failures of requests that were in flight while it was
            # out do not count towards ejecting it again, and the latency estimate
            # its failures inflated is dropped, so that latency-aware algorithms try
            # it again (scored at the pool's mean until it has new samples).
            member.consecutive_local = member.consecutive_gateway = member.consecutive_5xx = 0
            member.sampled = False
            self._latency_marks[member] = finished(member)
            if (
                member.tier == PRIMARY
                and self.fail_back_after > 0
                and not self._serving(PRIMARY, member)
                and self._serving(STANDBY, member)
            ):  # hold before traffic leaves the standbys (pointless when none serves)
                self._schedule(member, now + self.fail_back_after)
            else:
                self._start_ramp(member, now)
        self._emit(new.value, member)

    def _serving(self, tier: int, besides: Member) -> bool:
        """Whether a member of ``tier`` other than ``besides`` is available."""
        return any(
            m is not besides and m.health is Health.HEALTHY and not m.until
            for m in self._tiers[tier].members
        )

    def _start_ramp(self, member: Member, now: float) -> None:
        if self.slow_start > 0:
            member.ramp_start = now
            member.ramp_until = now + self.slow_start

    def _schedule(self, member: Member, when: float) -> None:
        member.until = when
        heapq.heappush(self._timers, (when, next(self._timer_ids), member))
        self._next_timer = self._timers[0][0]

    def _run_timers(self, now: float) -> None:
        """Fire the timers due: O(log n) each. A timer whose member's ``until`` no
        longer matches was cancelled or replaced, and is skipped."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, _, member = heapq.heappop(timers)
            if member.until != due or self._members.get(member.upstream.key) is not member:
                continue
            member.until = 0.0
            if member.health is Health.EJECTED:
                self._set_health(member, Event.EXPIRE)
                member.last_ejection_end = due  # back in since then, even if no pick saw it
            elif member.health is Health.DRAINING:
                self._drop(member)
            elif member.health is Health.HEALTHY:  # the fail-back hold is over
                self._start_ramp(member, now)
                self._dirty = True
        self._next_timer = timers[0][0] if timers else math.inf

    def _eject_if_outlier(self, member: Member, now: float) -> None:
        rules = self.outlier
        if rules is not None and member.health is Health.HEALTHY and failing(member, rules):
            self._eject(member, rules, now)

    def _eject_slow(self, now: float) -> None:
        """Latency outliers; run at most every ``latency_interval`` seconds."""
        rules = self.outlier
        if rules is None or rules.latency_factor is None:
            self._latency_due = math.inf
            return
        self._latency_due = now + rules.latency_interval
        for tier in self._tiers:
            for member in slow_members(tier.members, rules, self._latency_marks):
                self._eject(member, rules, now)

    def _eject(self, member: Member, rules: OutlierDetection, now: float) -> None:
        """Eject ``member`` unless its tier's cap is reached."""
        tier = self._tiers[member.tier]
        if tier.ejected + 1 > max(1, math.floor(rules.max_ejected_share * len(tier.members))):
            return
        if now - member.last_ejection_end >= rules.max_ejection_time:
            member.streak = 0
        member.streak += 1
        member.consecutive_local = member.consecutive_gateway = member.consecutive_5xx = 0
        self._set_health(member, Event.EJECT)
        self._schedule(member, now + rules.ejection_time(member.streak))

    def report_check(
        self, upstream: str | Upstream, passed: bool, *, rise: int = 1, fall: int = 1
    ) -> None:
        """Record one active health check result (HAProxy's rise/fall counting)."""
        with self._lock:
            member = self._members.get(as_upstream(upstream).key)
            if member is None:
                return
            if passed:
                member.check_fails = 0
                member.check_passes += 1
                if member.health is Health.DOWN and member.check_passes >= rise:
                    self._set_health(member, Event.CHECK_UP)
                elif member.health is Health.EJECTED:
                    self._set_health(member, Event.CHECK_PASS)
            else:
                member.check_passes = 0
                member.check_fails += 1
                if member.check_fails >= fall:
                    self._set_health(member, Event.CHECK_DOWN)

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

    def subscribe(self, listener: Callable[[str, Member], None]) -> None:
        """Call ``listener(event, member)`` on every health or membership change.

        Listeners run inside the change, under the pool's (re-entrant) lock, so
        they see each change in order: keep them short, and hand anything slow or
        blocking to another thread."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[str, Member], None]) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, event: str, member: Member) -> None:
        for listener in self._listeners:
            listener(event, member)

    # -- picking ----------------------------------------------------------------

    def _rebuild(self, now: float) -> None:
        any_available = False
        for tier in self._tiers:
            tier.available = [m for m in tier.members if m.health is Health.HEALTHY and not m.until]
            if tier.algorithm.hashes and tier.available:
                listed = [m for m in tier.members if m.health is not Health.DRAINING]
                tier.unavailable = frozenset(listed).difference(tier.available)
                tier.algorithm.rebuild(listed)
            else:
                tier.unavailable = frozenset()
                tier.algorithm.rebuild(tier.available)
            any_available = any_available or bool(tier.available)
        if any_available:
            self._panic = None
        else:
            everyone = [
                m for t in self._tiers for m in t.members if m.health is not Health.DRAINING
            ]
            self._panic = self.algorithm.bind(self.rng, self.clock)
            self._panic.rebuild(everyone)
        self._dirty = False

    def _current(self) -> float:
        """The time now, after any timer due has fired and candidates are rebuilt."""
        now = self.clock()
        if now >= self._next_timer:
            self._run_timers(now)
        if self._dirty:
            self._rebuild(now)
        return now

    @property
    def panicking(self) -> bool:
        """Every upstream is out and the pool balances over all of them."""
        with self._lock:
            self._current()
            return self._panic is not None

    def pick(
        self,
        key: str | None = None,
        exclude: Collection[Member] = _NO_EXCLUSIONS,
        *,
        last_resort: bool = False,
    ) -> Lease:
        """Choose an upstream for one attempt; raise ``NoUpstream`` if none may serve.

        ``key`` feeds the hashing algorithms; ``exclude`` lists members this request
        already tried. With ``last_resort`` (a retry that found every available
        upstream tried), an ejected one that was not tried is better than none:
        the one with the fewest requests in flight, as Envoy's panic would send
        there anyway, but for this request alone.
        """
        with self._lock:
            now = self.clock()
            if now >= self._next_timer or self._dirty:
                self._current()
            member = held = None
            for tier in self._tiers:
                if tier.available:
                    out = tier.unavailable
                    member = tier.algorithm.pick(key, out.union(exclude) if out else exclude)
                    if member is not None:
                        if now < member.ramp_until and not tier.algorithm.hashes:
                            held = held or member  # if the next tier has no one, it serves
                            member = self._ramp_gate(tier, member, key, exclude, now)
                        if member is not None:
                            break
            if member is None:
                member = held
            if member is None and self._panic is not None:
                member = self._panic.pick(key, exclude)
            if member is None and last_resort:
                member = self._last_resort(exclude)
            if member is None:
                raise NoUpstream("no upstream available")
            member.in_flight += 1
            member.requests += 1
            if self._tracks_load:
                self._tiers[member.tier].algorithm.changed(member)
                if self._panic is not None:
                    self._panic.changed(member)
            return Lease(self, member, now)

    def _last_resort(self, exclude: Collection[Member]) -> Member | None:
        left = [
            m
            for t in self._tiers
            for m in t.members
            if m.health is not Health.DRAINING and m not in exclude
        ]
        return min(left, key=lambda m: m.in_flight / m.weight) if left else None

    def _ramp_gate(
        self, tier: _Tier, member: Member, key: str | None, exclude: Collection[Member], now: float
    ) -> Member | None:
        """Slow start: let a ramping member through with probability equal to its
        share of full weight; otherwise pick again without it. A tier with no one
        else to take the request spills it to the next tier (this is how fail-back
        is gradual), or keeps the member if there is no next tier."""
        if self.rng.random() < member.ramp(now, self.slow_start_min_share):
            return member
        other = tier.algorithm.pick(key, {*exclude, member})
        if other is not None:
            return other
        if tier is self._tiers[PRIMARY] and self._tiers[STANDBY].available:
            return None
        return member

    def _penalty(self, member: Member, elapsed: float) -> float:
        """The latency a failed attempt counts as: at least ``failure_penalty``, and
        twice the member's estimate (so a slow service's failures still cost more
        than its successes), capped at ten penalties so that a long run of failures
        cannot push the estimate beyond recovery."""
        doubled = 2 * member.ewma if member.sampled else 0.0
        return max(elapsed, self.failure_penalty, min(doubled, 10 * self.failure_penalty))

    def _responded(self, lease: Lease, status: int) -> None:
        with self._lock:
            now = self.clock()
            member = lease.member
            lease.status = status
            lease.elapsed = elapsed = now - lease.started
            if status >= 500:
                member.failures += 1
                member.consecutive_5xx += 1
                if status in GATEWAY_ERRORS:
                    member.consecutive_gateway += 1
                else:
                    member.consecutive_gateway = 0
                member.observe(self._penalty(member, elapsed), now)
                self._eject_if_outlier(member, now)
            else:
                member.consecutive_local = member.consecutive_gateway = member.consecutive_5xx = 0
                member.observe(elapsed, now)
            if self._tracks_load:
                self._tiers[member.tier].algorithm.changed(member)
                if self._panic is not None:
                    self._panic.changed(member)
            if now >= self._latency_due:
                self._eject_slow(now)

    def _finish(self, lease: Lease, outcome: Outcome) -> None:
        with self._lock:
            if lease.done:
                return
            lease.done = True
            now = self.clock()
            member = lease.member
            member.in_flight -= 1
            if outcome in FAILURES:
                member.failures += 1
                member.consecutive_local += 1
                if lease.elapsed is None:
                    lease.elapsed = now - lease.started
                    member.observe(self._penalty(member, lease.elapsed), now)
                self._eject_if_outlier(member, now)
            elif outcome is Outcome.SUCCESS and lease.elapsed is None:
                lease.elapsed = now - lease.started
                member.consecutive_local = member.consecutive_gateway = member.consecutive_5xx = 0
                member.observe(lease.elapsed, now)
            if self._tracks_load:
                self._tiers[member.tier].algorithm.changed(member)
                if self._panic is not None:
                    self._panic.changed(member)
            if member.health is Health.DRAINING and member.in_flight == 0:
                self._drop(member)
            if now >= self._latency_due:
                self._eject_slow(now)

    # -- retries ----------------------------------------------------------------

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

    # -- reading ----------------------------------------------------------------

    @property
    def members(self) -> Sequence[Member]:
        with self._lock:
            return [m for t in self._tiers for m in t.members]

    def __len__(self) -> int:
        return len(self._members)

    def snapshot(self) -> dict[str, Any]:
        """Per upstream: url, tier, state, in-flight, latency, requests, failures.

        One consistent reading: the lock is held only to copy each member's fields
        (about 0.3 us per member); the rows are built after it is released."""
        with self._lock:
            now = self._current()
            panic = self._panic is not None
            values = [v for t in self._tiers for v in map(snapshot_values, t.members)]
        return {
            "algorithm": self.algorithm.name,
            "panic": panic,
            "upstreams": [snapshot_row(v, now) for v in taking_turns(values)],
        }
