"""``Decision``: why a request went where it went, as a record a response
carries (``response.extensions["clientlb.decision"]``), a proxy logs, and a
tracing span is annotated with.

Every pick knows its reason for free (``Lease.reason``). The candidates and
their scores cost a pass over the tier, so they are gathered only for a pick
that asks (``Pool.pick(explain=True)``): at most ``MAX_CANDIDATES``, best
first.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Candidates a record keeps: the best ones, so a pool of thousands stays small.
MAX_CANDIDATES = 8

#: The reasons a pick gives.
REASONS = {
    "balanced": "the algorithm's pick among the primaries",
    "failover": "no primary could serve: the algorithm's pick among the standbys",
    "sticky": "the upstream the client's sticky cookie names",
    "panic": "no tier could serve on its own: the pick among every upstream not down",
    "last resort": "a retry with every available upstream tried: an ejected one",
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One upstream a pick weighed: its score (lower wins; ``None`` for
    algorithms that rank by none), state and requests in flight then."""

    upstream: str
    score: float | None
    state: str
    in_flight: int


@dataclass(frozen=True, slots=True)
class Decision:
    """Why the request's first attempt went to ``upstream``.

    ``reason`` is one of ``REASONS``; ``tier`` the upstream's; ``key`` what a
    hashing algorithm hashed (``None`` for the others); ``candidates`` what
    the algorithm weighed, best first, when the request asked for them
    (``extensions={"clientlb.explain": True}``, or a proxy's decision header);
    ``attempts`` how many attempts the request took in all.
    """

    algorithm: str
    upstream: str
    tier: str
    reason: str
    key: str | None
    attempts: int
    candidates: tuple[Candidate, ...] = ()

    def header(self) -> str:
        """The record as one header value: ``upstream=...; reason=...; ...``."""
        parts = [
            f"upstream={self.upstream}",
            f"reason={self.reason}",
            f"algorithm={self.algorithm}",
            f"tier={self.tier}",
            f"attempts={self.attempts}",
        ]
        if self.candidates:
            parts.append(
                "candidates="
                + ",".join(
                    f"{c.upstream} {c.score:.4g}" if c.score is not None else c.upstream
                    for c in self.candidates[:3]
                )
            )
        return "; ".join(parts)
