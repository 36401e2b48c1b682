"""Outlier detection rules: when passive health says an upstream should go.

``failing()`` reads one member's consecutive failures, after each of its requests,
and says which rule they break.
``slow_members()`` finds latency outliers, upstreams much slower than the rest of
their tier; the pool asks it at most every ``OutlierDetection.latency_interval``
seconds, never per request: one pass over a tier and one median of its latency
estimates.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from ._member import Member
from ._policies import OutlierDetection
from ._state import SERVING


def failing(member: Member, rules: OutlierDetection) -> str | None:
    """The consecutive rule ``member``'s failures in a row reach (its field name in
    ``OutlierDetection``), or ``None``."""
    local = rules.consecutive_local_failures
    if local and member.consecutive_local >= local:
        return "consecutive_local_failures"
    gateway = rules.consecutive_gateway_errors
    if gateway and member.consecutive_gateway >= gateway:
        return "consecutive_gateway_errors"
    any_5xx = rules.consecutive_5xx
    if any_5xx and member.consecutive_5xx >= any_5xx:
        return "consecutive_5xx"
    return None


def slow_members(members: Iterable[Member], rules: OutlierDetection) -> list[Member]:
    """The members whose latency EWMA is above ``latency_factor`` x the median of
    their tier, slowest first.

    The median is taken over every serving member with a latency estimate (at
    least two of them); only members with ``latency_min_samples`` requests finished
    since their admission (``Member.finished_mark``) may be judged,
    so that an upstream just put back is judged on fresh samples, not on the ones
    that got it ejected.
    """
    factor = rules.latency_factor
    if factor is None:
        return []
    peers = [m for m in members if m.health in SERVING and m.sampled]
    if len(peers) < 2:
        return []
    median = statistics.median(m.ewma for m in peers)
    if median <= 0:
        return []
    limit = factor * median
    need = rules.latency_min_samples
    slow = [m for m in peers if m.ewma > limit and m.finished() - m.finished_mark >= need]
    return sorted(slow, key=lambda m: m.ewma, reverse=True)
