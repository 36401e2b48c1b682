"""``AttemptPlan``: the failover, retry, deadline and hedging decisions for one
request.

The plan decides; the shells act (through the drivers in ``clientlb._attempts``).
A driver asks the plan for an upstream, tries it, tells the plan what happened,
and the plan says whether to try again, where, how long to wait, and how long
the next attempt may take:

    plan = AttemptPlan(pool, "GET")
    lease = plan.first()
    ... on failure: if plan.retry_after(outcome, replayable=...): lease = plan.next()

Safety follows what may have reached the upstream (as urllib3's ``Retry`` does): a
connection that was never established cannot have been seen by the upstream, so
any method may go elsewhere; after a reset, a timeout or a retryable status the
upstream may have acted, so only idempotent methods are resent. Every retry and
every hedge draws on the pool's retry budget, and a retry never goes back to an
upstream this request already tried while another is left.

Deadlines come from the policy (``RetryPolicy.timeout``, ``per_try_timeout``):
the plan says how long each attempt may take and how long to back off, stops
retrying when the call's time is spent, and starts no retry at an upstream whose
expected latency exceeds what is left (``OutOfTime``).
"""

from __future__ import annotations

from ._decision import Decision
from ._errors import NoUpstream
from ._history import (
    Attempt,
    new_attempt,
    set_elapsed,
    set_outcome,
    set_reason,
    set_status,
    set_upstream,
)
from ._member import TIER_NAMES, Member
from ._outcome import NEVER_SENT, Outcome
from ._policies import RetryPolicy
from ._pool import Lease, Pool

#: ``AttemptPlan.decision()``'s common records, by algorithm, upstream, tier and
#: reason (emptied when it reaches its bound: upstreams come and go).
_COMMON_DECISIONS: dict[tuple[str, str, int, str], Decision] = {}
_MAX_COMMON_DECISIONS = 4096


class OutOfTime(LookupError):
    """The call's time is spent, or too short for the next attempt to answer."""


class AttemptPlan:
    """Decides the upstream of each attempt of one request and when to stop.

    ``policy`` replaces the pool's ``RetryPolicy`` for this request (a request's
    own, from ``extensions={"clientlb.retry": ...}``). ``pin`` is the key of the
    upstream a sticky client is pinned to: the first attempt goes there if it
    may serve (``Pool.pick(prefer=...)``); retries and hedges go elsewhere.
    ``explain`` has the first pick list the candidates it weighed, for the
    request's ``decision()``."""

    __slots__ = (
        "_first",
        "_noted",
        "_resends",
        "_tried",
        "deadline",
        "explain",
        "hedges",
        "history",
        "key",
        "lease",
        "method",
        "pin",
        "policy",
        "pool",
        "refused",
        "untimed",
    )

    def __init__(
        self,
        pool: Pool,
        method: str,
        key: str | None = None,
        policy: RetryPolicy | None = None,
        pin: str | None = None,
        explain: bool = False,
    ) -> None:
        self.pool = pool
        self.explain = explain
        self._first: Lease | None = None
        self.method = method
        self.key = key
        self.pin = pin
        self.policy = policy = policy if policy is not None else pool.retry
        timeout = policy.timeout
        self.deadline = None if timeout is None else pool.clock() + timeout
        #: No deadline, no per-try timeout, no hedges: ``attempt_timeout()`` and
        #: ``hedge_delay()`` are always ``None`` (the drivers' common case).
        self.untimed = (
            timeout is None and policy.per_try_timeout is None and policy.hedge_after is None
        )
        self.history: list[Attempt] = []
        self.hedges = 0  # hedges sent (the other attempts after the first are retries)
        self.refused = 0  # retries and hedges the retry budget refused
        self.lease: Lease | None = None
        self._tried: list[Member] = []
        self._resends = 0
        self._noted = False

    # -- where -------------------------------------------------------------------

    def first(self) -> Lease:
        """The first attempt's lease; counts the request towards the retry budget
        (once: a caller that got ``Saturated`` and waited for a slot asks again).
        Once picked, the same lease until an attempt is recorded (so a shell may
        pick, then hand the plan to the driver that makes the attempt)."""
        if self._first is not None and not self.history:
            return self._first
        if self._noted:
            lease = self.pool.pick(self.key, prefer=self.pin, explain=self.explain)
        else:
            self._noted = True
            lease = self.pool._pick_noted(self.key, self.pin, self.explain)
        self.lease = self._first = lease
        self._tried.append(lease.member)
        return lease

    def next(self) -> Lease:
        """The next attempt's lease: an available upstream not tried yet, else an
        ejected one not tried yet (an upstream ejected a moment ago may well be
        back, and a retry with nowhere to go is a certain failure), or else at
        least not the one just tried. Raises ``NoUpstream``, or ``OutOfTime``
        when what is left of the call is less than that upstream's expected
        latency."""
        try:
            lease = self._pick(self._tried, last_resort=True)
        except NoUpstream:
            if len(self._tried) < 2:
                raise
            lease = self._pick((self._tried[-1],))
        self._mind_the_time(lease)
        return lease

    def hedge(self) -> Lease | None:
        """A lease for a hedge (a second attempt while the first is still out) at
        an upstream not tried yet, if the budget allows one; ``None`` if not.
        The budget is drawn on only for a hedge that goes out."""
        pool = self.pool
        if not pool.has_retry():
            self.refused += 1
            return None
        try:
            lease = pool.pick(self.key, frozenset(self._tried))
        except NoUpstream:
            return None
        try:
            self._mind_the_time(lease)
        except OutOfTime:
            return None
        if not pool.take_retry():  # another call took the last one meanwhile
            lease.finish(Outcome.CANCELLED)
            self.refused += 1
            return None
        self.hedges += 1
        self.lease = lease
        self._tried.append(lease.member)
        return lease

    def _pick(
        self, exclude: tuple[Member, ...] | list[Member], *, last_resort: bool = False
    ) -> Lease:
        lease = self.pool.pick(
            self.key, frozenset(exclude) if exclude else frozenset(), last_resort=last_resort
        )
        self.lease = lease
        self._tried.append(lease.member)
        return lease

    def _mind_the_time(self, lease: Lease) -> None:
        left = self.remaining()
        if left is None:
            return
        member = lease.member
        if left <= 0 or (member.sampled and member.ewma > left):
            lease.finish(Outcome.CANCELLED)
            raise OutOfTime(f"{left:.3f} s left of the call's time")

    # -- what happened -------------------------------------------------------------

    def decision(self) -> Decision | None:
        """Why the first attempt went where it went (``None`` before it did)."""
        lease = self._first
        if lease is None:
            return None
        member = lease.member
        attempts = len(self.history)
        if self.key is not None or attempts > 1 or lease.candidates:
            return Decision(
                self.pool.algorithm.name,
                member.upstream.url,
                TIER_NAMES[member.tier],
                lease.reason,
                self.key,
                max(attempts, 1),
                lease.candidates,
            )
        # The common record (one attempt, no key, no candidates) is one of a few
        # per pool: records are immutable, so one of each serves every request.
        algorithm, url = self.pool.algorithm.name, member.upstream.url
        tier, reason = member.tier, lease.reason
        common = _COMMON_DECISIONS.get((algorithm, url, tier, reason))
        if common is None:
            common = Decision(algorithm, url, TIER_NAMES[tier], reason, None, 1)
            if len(_COMMON_DECISIONS) >= _MAX_COMMON_DECISIONS:
                _COMMON_DECISIONS.clear()
            _COMMON_DECISIONS[algorithm, url, tier, reason] = common
        return common

    def record(self, lease: Lease, outcome: Outcome | str, status: int | None = None) -> None:
        """Add one attempt to the history."""
        # Attempt(...) without its __init__'s frame: the same slots set alike
        attempt = new_attempt(Attempt)
        set_upstream(attempt, lease.member.upstream.url)
        set_outcome(attempt, outcome if isinstance(outcome, str) else outcome.value)
        set_status(attempt, status)
        set_elapsed(attempt, lease.elapsed)
        set_reason(attempt, lease.reason)
        self.history.append(attempt)

    def retry_after(
        self, outcome: Outcome | None, *, status: int | None = None, replayable: bool
    ) -> bool:
        """Whether to try another upstream after this failure.

        ``outcome`` is the failure (``None`` when a response with ``status`` came
        back); ``replayable`` says the request body can be sent again in full.
        """
        if not replayable or outcome is Outcome.CANCELLED or self.out_of_time():
            return False
        policy = self.policy
        never_sent = outcome in NEVER_SENT
        if never_sent:
            # Never reached the upstream: try each upstream once, whatever the method.
            if len(set(self._tried)) >= len(self.pool):
                return False
        else:
            if outcome is None and status not in policy.retry_on_status:
                return False
            if not policy.may_resend(self.method) or self._resends >= policy.max_retries:
                return False
        if not self.pool.take_retry():
            self.refused += 1
            return False
        if not never_sent:
            self._resends += 1
        return True

    # -- how long ------------------------------------------------------------------

    def remaining(self) -> float | None:
        """Seconds left of the call's time (``None``: no limit)."""
        return None if self.deadline is None else self.deadline - self.pool.clock()

    def out_of_time(self) -> bool:
        return self.deadline is not None and self.pool.clock() >= self.deadline

    def attempt_timeout(self) -> float | None:
        """How long the next attempt may take to answer."""
        per_try, left = self.policy.per_try_timeout, self.remaining()
        if left is None:
            return per_try
        left = max(left, 0.0)
        return left if per_try is None else min(per_try, left)

    def backoff(self) -> float:
        """How long to wait before the next attempt."""
        left = self.remaining()
        wait = self.policy.backoff
        return wait if left is None else max(min(wait, left), 0.0)

    def hedge_delay(self) -> float | None:
        """How long an attempt may go unanswered before a hedge goes out; ``None``
        for no hedge (not asked for, not idempotent, no latency estimate yet, or
        not before the call's time is spent)."""
        policy = self.policy
        if policy.hedge_after is None or not policy.may_resend(self.method):
            return None
        quantile = policy.hedge_quantile
        delay = (
            self.pool.latency_quantile(quantile)
            if quantile is not None
            else float(policy.hedge_after)
        )
        left = self.remaining()
        if delay is None or (left is not None and delay >= left):
            return None
        return delay
