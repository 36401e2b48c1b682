"""``Attempt``: the record of one attempt at one upstream, as a request's history
holds it.

Apart from ``AttemptPlan`` (which builds them) so that the plan can be compiled
while the public record stays a plain dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, init=False)
class Attempt:
    """What happened at one upstream: the record a response or error carries."""

    upstream: str
    outcome: str
    status: int | None
    elapsed: float | None
    #: Why the pool picked this upstream (see ``Lease.reason``).
    reason: str = ""

    def __init__(
        self,
        upstream: str,
        outcome: str,
        status: int | None,
        elapsed: float | None,
        reason: str = "",
    ) -> None:
        # The dataclass's own __init__ for a frozen class, but through each
        # slot's setter, looked up once (a record is built per attempt).
        set_upstream(self, upstream)
        set_outcome(self, outcome)
        set_status(self, status)
        set_elapsed(self, elapsed)
        set_reason(self, reason)


set_upstream = vars(Attempt)["upstream"].__set__
set_outcome = vars(Attempt)["outcome"].__set__
set_status = vars(Attempt)["status"].__set__
set_elapsed = vars(Attempt)["elapsed"].__set__
set_reason = vars(Attempt)["reason"].__set__
new_attempt = object.__new__
