"""``AttemptPlan``: the failover and retry decisions for one request.

The plan decides; the shells act. A driver asks the plan for an upstream, tries
it, tells the plan what happened, and the plan says whether to try again and where:

    plan = AttemptPlan(pool, "GET")
    lease = plan.first()
    ... on failure: if plan.retry_after(outcome, replayable): lease = plan.next()

Safety follows what may have reached the upstream (as urllib3's ``Retry`` does): a
connection that was never established cannot have been seen by the upstream, so
any method may go elsewhere; after a reset, a timeout or a retryable status the
upstream may have acted, so only idempotent methods are resent. Every retry draws
on the pool's retry budget, and a retry never goes back to an upstream this
request already tried while another is left.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import NoUpstream
from ._member import Member
from ._outcome import Outcome
from ._pool import Lease, Pool


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened at one upstream: the record a response or error carries."""

    upstream: str
    outcome: str
    status: int | None
    elapsed: float | None


class AttemptPlan:
    """Decides the upstream of each attempt of one request and when to stop."""

    __slots__ = ("_resends", "_tried", "history", "key", "lease", "method", "pool")

    def __init__(self, pool: Pool, method: str, key: str | None = None) -> None:
        self.pool = pool
        self.method = method
        self.key = key
        self.history: list[Attempt] = []
        self.lease: Lease | None = None
        self._tried: list[Member] = []
        self._resends = 0

    def first(self) -> Lease:
        """The first attempt's lease; counts the request towards the retry budget."""
        self.pool.note_request()
        return self._pick(())

    def next(self) -> Lease:
        """The next attempt's lease: an available upstream not tried yet, else an
        ejected one not tried yet (an upstream ejected a moment ago may well be
        back, and a retry with nowhere to go is a certain failure), or else at
        least not the one just tried."""
        try:
            return self._pick(self._tried, last_resort=True)
        except NoUpstream:
            if len(self._tried) < 2:
                raise
            return self._pick((self._tried[-1],))

    def _pick(
        self, exclude: tuple[Member, ...] | list[Member], *, last_resort: bool = False
    ) -> Lease:
        lease = self.pool.pick(
            self.key, frozenset(exclude) if exclude else frozenset(), last_resort=last_resort
        )
        self.lease = lease
        self._tried.append(lease.member)
        return lease

    def record(self, lease: Lease, outcome: Outcome | str, status: int | None = None) -> None:
        """Add one attempt to the history."""
        label = outcome.value if isinstance(outcome, Outcome) else outcome
        self.history.append(Attempt(lease.upstream.url, label, status, lease.elapsed))

    def retry_after(
        self, outcome: Outcome | None, *, status: int | None = None, replayable: bool
    ) -> bool:
        """Whether to try another upstream after this failure.

        ``outcome`` is the failure (``None`` when a response with ``status`` came
        back); ``replayable`` says the request body can be sent again in full.
        """
        if not replayable or outcome is Outcome.CANCELLED:
            return False
        policy = self.pool.retry
        if outcome is Outcome.CONNECT_FAILURE:
            # Never reached the upstream: try each upstream once, whatever the method.
            if len(set(self._tried)) >= len(self.pool):
                return False
        else:
            if outcome is None and status not in policy.retry_on_status:
                return False
            if not policy.may_resend(self.method) or self._resends >= policy.max_retries:
                return False
        if not self.pool.take_retry():
            return False
        if outcome is not Outcome.CONNECT_FAILURE:
            self._resends += 1
        return True
