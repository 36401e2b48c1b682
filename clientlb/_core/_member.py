"""``Member``: the live state of one upstream inside a pool.

Counters, latency estimates and health live here, in one object per upstream that
every algorithm, transport and proxy sharing the pool reads and updates.
"""

from __future__ import annotations

import math
from operator import attrgetter
from typing import Any

from ._state import Health
from ._upstream import Upstream

PRIMARY = 0
STANDBY = 1
TIER_NAMES = ("primary", "standby")

#: Weight of a new sample in the per-request latency EWMA (least_response_time).
EWMA_ALPHA = 0.3
#: Decay time of the peak-EWMA estimate, in seconds (Finagle's default).
PEAK_EWMA_DECAY = 10.0


class Member:
    """One upstream's state in a pool. Mutated only by the pool."""

    __slots__ = (
        "check_fails",
        "check_passes",
        "consecutive_5xx",
        "consecutive_gateway",
        "consecutive_local",
        "ejections",
        "ewma",
        "failures",
        "health",
        "in_flight",
        "last_ejection_end",
        "peak",
        "peak_stamp",
        "ramp_start",
        "ramp_until",
        "requests",
        "sampled",
        "streak",
        "tier",
        "until",
        "upstream",
        "weight",
    )

    def __init__(self, upstream: Upstream, tier: int) -> None:
        self.upstream = upstream
        self.weight = upstream.weight
        self.tier = tier
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.sampled = False
        self.ewma = 0.0
        self.peak = 0.0
        self.peak_stamp = 0.0
        self.consecutive_local = 0
        self.consecutive_gateway = 0
        self.consecutive_5xx = 0
        self.health = Health.HEALTHY
        self.until = 0.0  # when a timed state ends: ejection, or the fail-back hold
        self.ejections = 0
        self.streak = 0  # ejections in a row, for the growing ejection time
        self.last_ejection_end = -math.inf
        self.ramp_start = 0.0
        self.ramp_until = 0.0
        self.check_passes = 0
        self.check_fails = 0

    def __repr__(self) -> str:
        return f"<Member {self.upstream.key} {self.health.value} in_flight={self.in_flight}>"

    # -- latency ---------------------------------------------------------------

    def observe(self, latency: float, now: float) -> None:
        """Fold one latency sample into the EWMA and the peak-EWMA."""
        if self.sampled:
            self.ewma += EWMA_ALPHA * (latency - self.ewma)
            peak = self.peak
            if latency > peak:
                self.peak = latency
            else:
                w = math.exp(-max(now - self.peak_stamp, 0.0) / PEAK_EWMA_DECAY)
                self.peak = peak * w + latency * (1.0 - w)
        else:
            self.sampled = True
            self.ewma = latency
            self.peak = latency
        self.peak_stamp = now

    def peak_cost(self, now: float) -> float:
        """The peak-EWMA estimate decayed to ``now`` (Finagle reads it this way)."""
        return self.peak * math.exp(-max(now - self.peak_stamp, 0.0) / PEAK_EWMA_DECAY)

    # -- slow start ------------------------------------------------------------

    def ramp(self, now: float, min_share: float) -> float:
        """Share of full weight during slow start: 1.0 once the ramp is over."""
        if now >= self.ramp_until:
            return 1.0
        span = self.ramp_until - self.ramp_start
        return max(min_share, (now - self.ramp_start) / span) if span > 0 else 1.0

    def snapshot(self, now: float) -> dict[str, Any]:
        return snapshot_row(snapshot_values(self), now)


#: What a snapshot reads of a member, as one tuple: taken under the pool's lock
#: (one C call per member), turned into a row outside it (``snapshot_row``).
snapshot_values = attrgetter(
    "upstream",
    "weight",
    "tier",
    "health",
    "until",
    "ramp_until",
    "in_flight",
    "sampled",
    "ewma",
    "peak",
    "peak_stamp",
    "requests",
    "failures",
    "ejections",
)


def snapshot_row(values: tuple[Any, ...], now: float) -> dict[str, Any]:
    """One upstream of ``Pool.snapshot()``, from ``snapshot_values(member)``."""
    (upstream, weight, tier, health, until, ramp_until, in_flight, sampled, ewma, peak, stamp,
     requests, failures, ejections) = values  # fmt: skip
    state = health.value
    if health is Health.HEALTHY and now < until:
        state = "recovering"
    elif health is Health.HEALTHY and now < ramp_until:
        state = "slow-start"
    decayed = peak * math.exp(-max(now - stamp, 0.0) / PEAK_EWMA_DECAY) if sampled else None
    return {
        "url": upstream.url,
        "weight": weight,
        "tier": TIER_NAMES[tier],
        "state": state,
        "in_flight": in_flight,
        "ewma_latency": ewma if sampled else None,
        "peak_ewma_latency": decayed,
        "requests": requests,
        "failures": failures,
        "ejections": ejections,
    }
