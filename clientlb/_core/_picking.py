"""The per-request half of ``Pool``: picking an upstream and settling the
pool's view after an attempt, all under the pool's lock.

``Pool`` extends ``Picking``. They are apart because this half runs on every
request and is compiled with the proxy's data path (see ``pyproject.toml``),
while ``Pool`` itself stays Python: its public methods take what users give
them and must answer a wrong type with a ``ConfigError`` or ``ValueError``
naming it, where a compiled signature would raise its own ``TypeError`` first.
The attributes below are ``Pool``'s, set by its ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from random import Random
from typing import TYPE_CHECKING, Any

from ._budget import BudgetLedger
from ._decision import MAX_CANDIDATES, Candidate
from ._errors import NoUpstream
from ._health_rules import HealthRules
from ._latency import LatencyWindow
from ._lease import Lease
from ._member import PRIMARY, Member, MemberState
from ._membership import Roster, Tier
from ._slots import Saturated, Slots
from ._state import PANIC_ELIGIBLE, SERVING, Health
from ._upstream import Upstream

if TYPE_CHECKING:
    from _typeshed import IdentityFunction

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # read by mypyc when it compiles; nothing to do at run time

    def mypyc_attr(*attrs: str, **kwattrs: object) -> IdentityFunction:
        """mypyc's class options (``mypy_extensions.mypyc_attr``), for Python."""
        return lambda cls: cls


NO_EXCLUSIONS: frozenset[Member] = frozenset()
_SLOW_START = Health.SLOW_START  # read per request


@mypyc_attr(allow_interpreted_subclasses=True)
class Picking:
    """What ``Pool.pick()`` and a ``Lease`` need of the pool (see the module doc)."""

    clock: Callable[[], float]
    rng: Random
    slow_start_min_share: float
    _lock: Any  # a threading.RLock
    _roster: Roster
    _tiers: Sequence[Tier]
    _rules: HealthRules
    _slots: Slots
    _full: set[Member]
    _budget: BudgetLedger | None
    _latencies: LatencyWindow
    _tracks_load: bool

    def _current(self) -> float:
        """The time now, after any timer due has fired and candidates are rebuilt
        (and, when nothing else serves, fail-back holds have ended)."""
        now = self.clock()
        rules, roster = self._rules, self._roster
        if now >= rules.next_timer:
            rules.run_timers(now)
        if roster.dirty:
            roster.rebuild()
            if not roster.order and roster.count(Health.RECOVERING):
                rules.end_pointless_holds(now)
                roster.rebuild()
        return now

    def _choose(
        self,
        key: str | None,
        exclude: Collection[Member | MemberState | Upstream],
        last_resort: bool,
        prefer: str | None,
        explain: bool,
        now: float,
    ) -> Lease:
        """``pick()`` at ``now``, under the pool's lock."""
        roster = self._roster
        if now >= self._rules.next_timer or roster.dirty:
            self._current()
        tried = skip = roster.named(exclude) if exclude else NO_EXCLUSIONS
        full = self._full
        if full:
            skip = full.union(skip)
        why = ""
        member: Member | None = None if prefer is None else self._pinned(prefer, skip)
        if member is not None:
            why = "sticky"
        else:
            member = self._balanced(roster.order, key, skip, now)
        panic = roster.panic
        if member is None and panic is not None:
            skipped = roster.panic_out
            member = panic.pick(key, skipped.union(skip) if skipped else skip)
            why = "panic"
        if member is None and last_resort:
            member = roster.last_resort(skip)
            why = "last resort"
        if member is None:
            if full and self._blocked_by_limits(tried, last_resort):
                raise Saturated(version=self._slots.version)
            raise NoUpstream("no upstream available")
        if not why:
            why = "balanced" if member.tier == PRIMARY else "failover"
        lease = Lease(self, member, now, why)
        if explain:
            lease.candidates = self._candidates(why, member, now)
        member.in_flight += 1
        member.waiting += 1
        member.waiting_since += now
        member.requests += 1
        limit = member.limit
        if limit is not None and member.in_flight >= limit:
            full.add(member)
        if self._tracks_load:
            self._tiers[member.tier].algorithm.changed(member)
            if panic is not None:
                panic.changed(member)
        return lease

    def _balanced(
        self, order: Sequence[Tier], key: str | None, skip: Collection[Member], now: float
    ) -> Member | None:
        """The algorithm's pick in the first tier of ``order`` that has one, through
        the slow-start gate; a ramping member the gate turned away serves if no
        later tier has anyone."""
        held: Member | None = None
        for tier in order:
            out = tier.unavailable
            member = tier.algorithm.pick(key, out.union(skip) if out else skip)
            if member is not None:
                if member.health is _SLOW_START:
                    held = held or member  # if the next tier has no one, it serves
                    spill = tier is not order[-1]
                    member = self._ramp_gate(tier, member, key, skip, now, spill)
                if member is not None:
                    return member
        return held

    def _candidates(self, why: str, member: Member, now: float) -> tuple[Candidate, ...]:
        """What the algorithm weighed for ``member``'s pick: its tier's serving
        members (every panic-eligible one in panic), scored, best first."""
        roster = self._roster
        if why == "panic" and roster.panic is not None:
            algorithm, members = roster.panic, [m for m in roster if m.health in PANIC_ELIGIBLE]
        else:
            tier = self._tiers[member.tier]
            serving = tier.available or [m for m in tier.members if m.health in SERVING]
            algorithm, members = tier.algorithm, serving or [member]
        scored = [(algorithm.score_of(m), m) for m in members]
        scored.sort(key=lambda pair: (pair[0] is None, pair[0] or 0.0))
        return tuple(
            Candidate(m.upstream.url, score, m.health.value, m.in_flight)
            for score, m in scored[:MAX_CANDIDATES]
        )

    def _blocked_by_limits(self, tried: Collection[Member], last_resort: bool) -> bool:
        """Whether a full upstream not in ``tried`` could have served (a pick
        that found no one, so off the hot path)."""
        roster = self._roster
        serving = {roster.tiers.index(t) for t in roster.order}
        anyone = roster.panic is not None or last_resort
        for member in self._slots.full:
            if member in tried or roster.get(member.upstream.key) is not member:
                continue
            if member.health in SERVING and member.tier in serving:
                return True
            if anyone and member.health in PANIC_ELIGIBLE:
                return True
        return False

    def _pinned(self, key: str, exclude: Collection[Member]) -> Member | None:
        """The member ``key`` names if it may serve a pinned client: it is in the
        pool, healthy or slow-starting (a pin skips the ramp: the client is
        already there), not excluded, and in the tier that serves first (a
        client pinned to a standby goes back to the primaries once they serve).
        Ejected, down, draining, held and removed members are not; nor is any
        member in panic, when the pool balances over everyone."""
        member = self._roster.by_key.get(key)
        if member is None or member.health not in SERVING or member in exclude:
            return None
        order = self._roster.order
        if not order or order[0] is not self._tiers[member.tier]:
            return None
        return member

    def _settled(self, member: Member, now: float) -> None:
        """After an attempt's news: the algorithms' view of its load, and the
        latency outlier sweep when it is due."""
        if self._tracks_load:
            self._tiers[member.tier].algorithm.changed(member)
            panic = self._roster.panic
            if panic is not None:
                panic.changed(member)
        rules = self._rules
        if now >= rules.latency_due:
            rules.eject_slow(now)

    def _ramp_gate(
        self,
        tier: Tier,
        member: Member,
        key: str | None,
        exclude: Collection[Member],
        now: float,
        spill: bool,
    ) -> Member | None:
        """Slow start: let a ramping member through with probability equal to its
        share of full weight; otherwise pick again without it. A tier with no one
        else to take the request spills it to the next tier (``spill``: this is how
        fail-back is gradual), or keeps the member if there is no next tier."""
        if self.rng.random() < member.ramp(now, self.slow_start_min_share):
            return member
        other = tier.algorithm.pick(key, {*exclude, member})
        if other is not None:
            return other
        return None if spill else member

    def _pick_noted(self, key: str | None, prefer: str | None, explain: bool) -> Lease:
        """``note_request()`` and then ``pick()``, in one hold of the lock and at
        one reading of the clock (a request's first pick)."""
        lock = self._lock  # acquire()/release(): half the cost of a with block on an RLock
        lock.acquire()
        try:
            now = self.clock()
            if self._budget is not None:
                self._budget.request(now)
            return self._choose(key, NO_EXCLUSIONS, False, prefer, explain, now)
        finally:
            lock.release()

    def _read(self, member: Member) -> MemberState:
        with self._lock:
            return member.reading(self._current())
