"""Health rules: every change of an upstream's state, and the timers that end
the timed ones.

``HealthRules.change()`` is the one place a member's state changes: it asks the
state table (``_state.py``), applies Rule 2 there (a member back in service is
held for fail-back or ramps under slow start), sets the deadline of a timed
state, and tells the roster and the listeners. The rest are the decisions that
lead to a change:

* passive outlier detection: consecutive failures after each request, latency
  outliers at most every ``latency_interval`` (``_outlier.py`` says who);
* active check results, counted HAProxy's way (``rise``/``fall``);
* connect probes of upstreams ejected while refusing connections: when each
  is due and what its result does (the shells dial; ``probes_due``/``probed``);
* the timers: the end of an ejection, of the fail-back hold, of slow start and
  of a drain, one heap for all of them, O(log n) each;
* a fail-back hold is pointless once nothing else serves: it ends.

Time is the pool's injected clock; nothing here blocks or awaits.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

from ._member import PRIMARY, STANDBY, Member
from ._membership import Roster
from ._outlier import failing, slow_members
from ._policies import OutlierDetection
from ._state import SERVING, TIMED, Event, Health, transition

#: The deadline each timed state (and a drain) keeps on the member.
DEADLINES = {
    Health.EJECTED: "ejected_until",
    Health.RECOVERING: "held_until",
    Health.SLOW_START: "ramp_until",
    Health.DRAINING: "drain_deadline",
}
GATEWAY_ERRORS = frozenset({502, 503, 504})
#: The states a member is out of service in, judged afresh when it comes back.
_OUT = frozenset({Health.EJECTED, Health.DOWN})


class HealthRules:
    """The health decisions of one pool. Guarded by the pool's lock."""

    __slots__ = (
        "_emit",
        "_ids",
        "fail_back_after",
        "failure_penalty",
        "latency_due",
        "next_timer",
        "outlier",
        "probing",
        "roster",
        "slow_start",
        "timers",
    )

    def __init__(
        self,
        roster: Roster,
        emit: Callable[[str, Member], None],
        *,
        outlier: OutlierDetection | None,
        slow_start: float,
        fail_back_after: float,
        failure_penalty: float,
    ) -> None:
        self.roster = roster
        self._emit = emit
        self.outlier = outlier
        self.slow_start = slow_start
        self.fail_back_after = fail_back_after
        self.failure_penalty = failure_penalty
        self.timers: list[tuple[float, int, Member, Health]] = []  # a heap
        #: Ejected members with connect probes scheduled (``Member.probe_at``).
        self.probing: set[Member] = set()
        self._ids = itertools.count()
        #: When the earliest timer is due: the pool runs ``run_timers`` from then.
        self.next_timer = math.inf
        latency_rule = outlier is not None and outlier.latency_factor is not None
        #: When the latency outlier sweep is due (``inf``: never).
        self.latency_due = 0.0 if latency_rule else math.inf

    # -- the one place a state changes ------------------------------------------------

    def admit(self, member: Member, ramp: bool, now: float) -> None:
        """A new member joins the roster, under slow start if ``ramp``."""
        if ramp and self.slow_start > 0:
            member.health = transition(member.health, Event.RAMP)
            self._enter(member, now, math.inf)
        self.roster.admit(member)

    def change(self, member: Member, event: Event, now: float, until: float = math.inf) -> None:
        """Apply ``event`` to ``member``; ``until`` is the deadline of an ejection
        or a drain it starts."""
        old = member.health
        new = transition(old, event)
        if new is old:
            return
        if new is Health.HEALTHY:
            if old in _OUT:
                self._judged_afresh(member, old, now)
                if self._hold_applies(member):
                    new = transition(new, Event.HOLD)
            if new is Health.HEALTHY and old is not Health.SLOW_START and self.slow_start > 0:
                new = transition(new, Event.RAMP)
        member.health = new
        if new is Health.EJECTED:
            member.ejections += 1
        elif old is Health.EJECTED and member in self.probing:
            self.probing.discard(member)
            member.probe_at = math.inf
        self._enter(member, now, until)
        self.roster.recount(member, old, new)
        self._emit(new.value, member)

    def _judged_afresh(self, member: Member, old: Health, now: float) -> None:
        """Failures of requests that were in flight while it was out do not count
        towards ejecting it again, and the latency estimate its failures inflated
        is dropped, so that latency-aware algorithms try it again (scored at the
        pool's mean until it has new samples)."""
        if old is Health.EJECTED:
            member.last_ejection_end = now
        member.consecutive_local = member.consecutive_gateway = member.consecutive_5xx = 0
        member.sampled = False
        member.finished_mark = member.finished()

    def _hold_applies(self, member: Member) -> bool:
        """A primary back while only the standbys serve waits ``fail_back_after``
        before traffic leaves them (pointless when they do not serve either)."""
        roster = self.roster
        return (
            member.tier == PRIMARY
            and self.fail_back_after > 0
            and not roster.sufficient(PRIMARY)
            and roster.sufficient(STANDBY)
        )

    def _enter(self, member: Member, now: float, until: float) -> None:
        """Set the deadline of the state ``member`` just entered, if it has one."""
        state = member.health
        if state is Health.SLOW_START:
            member.ramp_start = now
            until = now + self.slow_start
        elif state is Health.RECOVERING:
            until = now + self.fail_back_after
        elif state not in DEADLINES:
            return
        setattr(member, DEADLINES[state], until)
        if until < math.inf:
            heapq.heappush(self.timers, (until, next(self._ids), member, state))
            self.next_timer = self.timers[0][0]

    # -- timers ---------------------------------------------------------------------

    def run_timers(self, now: float) -> None:
        """End the timed states due: O(log n) each. A timer whose member has left
        that state (or the pool), or whose deadline moved, is skipped."""
        timers = self.timers
        roster = self.roster
        while timers and timers[0][0] <= now:
            due, _, member, state = heapq.heappop(timers)
            if (
                member.health is not state
                or getattr(member, DEADLINES[state]) != due
                or roster.get(member.upstream.key) is not member
            ):
                continue
            if state is Health.DRAINING:
                roster.drop(member)
                continue
            self.change(member, TIMED[state], now)
            if state is Health.EJECTED:
                member.last_ejection_end = due  # back in since then, even if no pick saw it
        self.next_timer = timers[0][0] if timers else math.inf

    def end_pointless_holds(self, now: float) -> None:
        """No member of any tier serves: primaries held for fail-back serve now."""
        for member in [m for m in self.roster if m.health is Health.RECOVERING]:
            self.change(member, Event.HOLD_END, now)

    # -- passive health -------------------------------------------------------------

    def failed_status(self, member: Member, status: int, elapsed: float, now: float) -> None:
        """Response headers with a 5xx ``status`` after ``elapsed`` seconds (a
        502/503/504 is also a gateway error)."""
        member.failures += 1
        member.refused = False
        member.consecutive_5xx += 1
        if status in GATEWAY_ERRORS:
            member.consecutive_gateway += 1
        else:
            member.consecutive_gateway = 0
        member.observe(self._penalty(member, elapsed), now)
        self.eject_if_outlier(member, now)

    def succeeded(self, member: Member, elapsed: float, now: float) -> None:
        """A response below 500 after ``elapsed`` seconds: every run of failures ends."""
        member.consecutive_local = member.consecutive_gateway = member.consecutive_5xx = 0
        member.refused = False
        member.observe(elapsed, now)

    def failed(
        self, member: Member, elapsed: float | None, now: float, refused: bool = False
    ) -> None:
        """An attempt failed with no response (``elapsed``: after that long, if its
        latency is not counted yet); ``refused``: it could not even connect."""
        member.failures += 1
        member.consecutive_local += 1
        member.refused = refused
        if elapsed is not None:
            member.observe(self._penalty(member, elapsed), now)
        self.eject_if_outlier(member, now)

    def _penalty(self, member: Member, elapsed: float) -> float:
        """The latency a failed attempt counts as: at least ``failure_penalty``, and
        twice the member's estimate (so a slow service's failures still cost more
        than its successes), capped at ten penalties so that a long run of failures
        cannot push the estimate beyond recovery."""
        doubled = 2 * member.ewma if member.sampled else 0.0
        penalty = self.failure_penalty
        return max(elapsed, penalty, min(doubled, 10 * penalty))

    def eject_if_outlier(self, member: Member, now: float) -> None:
        rules = self.outlier
        if rules is not None and member.health in _EJECTABLE:
            reason = failing(member, rules)
            if reason is not None:
                self._eject(member, rules, now, reason)

    def eject_slow(self, now: float) -> None:
        """Latency outliers; run at most every ``latency_interval`` seconds."""
        rules = self.outlier
        if rules is None or rules.latency_factor is None:
            self.latency_due = math.inf
            return
        self.latency_due = now + rules.latency_interval
        for tier in self.roster.tiers:
            for member in slow_members(tier.members, rules):
                self._eject(member, rules, now, "latency")

    def _eject(self, member: Member, rules: OutlierDetection, now: float, reason: str) -> None:
        """Eject ``member`` unless its tier's cap is reached; ``reason`` is the rule
        that found it failing (``Member.ejected_for``, which watchers read)."""
        tier = self.roster.tiers[member.tier]
        if tier.ejected + 1 > max(1, math.floor(rules.max_ejected_share * len(tier.members))):
            return
        if now - member.last_ejection_end >= rules.max_ejection_time:
            member.streak = 0
        member.streak += 1
        member.consecutive_local = member.consecutive_gateway = member.consecutive_5xx = 0
        member.ejected_for = reason
        if member.refused and rules.probe_after is not None:
            member.probe_gap = rules.probe_after
            member.probe_at = now + rules.probe_after
            self.probing.add(member)
        self.change(member, Event.EJECT, now, now + rules.ejection_time(member.streak))

    # -- connect probes -------------------------------------------------------------

    def probes_due(self, now: float) -> tuple[list[Member], float]:
        """The members whose connect probe is due, each handed out once (its next
        probe is scheduled when ``probed()`` tells the result), and when the
        next one after them is due (``inf``: none scheduled)."""
        due: list[Member] = []
        following = math.inf
        roster = self.roster
        for member in list(self.probing):
            if member.health is not Health.EJECTED or roster.get(member.upstream.key) is not member:
                self.probing.discard(member)
            elif member.probe_at <= now:
                member.probe_at = math.inf  # out being probed
                due.append(member)
            elif member.probe_at < following:
                following = member.probe_at
        return due, following

    def probed(self, member: Member, connected: bool, now: float) -> None:
        """A connect probe's result: connected re-admits the member (Rule 2 applies:
        fail-back hold, slow start); refused schedules the next probe after twice
        the last wait, at most ``max_probe_interval``."""
        if member not in self.probing or member.health is not Health.EJECTED:
            return
        if connected:
            member.refused = False
            self.change(member, Event.PROBE_PASS, now)
            return
        rules = self.outlier
        cap = rules.max_probe_interval if rules is not None else member.probe_gap
        member.probe_gap = min(member.probe_gap * 2, cap)
        member.probe_at = now + member.probe_gap

    # -- active health and draining -------------------------------------------------

    def check(self, member: Member, passed: bool, rise: int, fall: int, now: float) -> None:
        """One active check result (HAProxy's rise/fall counting): a pass puts an
        ejected member back at once; ``rise`` passes in a row bring a member that
        is down back, ``fall`` failures in a row take any member down."""
        if passed:
            member.check_fails = 0
            member.check_passes += 1
            up = member.check_passes >= rise
            self.change(member, Event.CHECK_UP if up else Event.CHECK_PASS, now)
        else:
            member.check_passes = 0
            member.check_fails += 1
            if member.check_fails >= fall:
                self.change(member, Event.CHECK_DOWN, now)

    def drain(self, member: Member, timeout: float | None, now: float) -> None:
        """No new requests for ``member``; it leaves when its last one ends, or
        after ``timeout`` seconds (a later call sets a new deadline)."""
        deadline = math.inf if timeout is None else now + timeout
        if member.health is Health.DRAINING:
            self._enter(member, now, deadline)
        else:
            self.change(member, Event.DRAIN, now, deadline)
        if member.in_flight == 0:
            self.roster.drop(member)


#: The states passive outlier detection ejects from: serving, or held for
#: fail-back (tried as a last resort).
_EJECTABLE = SERVING | {Health.RECOVERING}
