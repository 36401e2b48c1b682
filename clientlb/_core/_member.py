"""``Member``: the live state of one upstream inside a pool.

Counters, latency estimates and health live here, in one object per upstream that
every algorithm, transport and proxy sharing the pool reads and updates.
"""

from __future__ import annotations

import math
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
        "index",
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

    def __init__(self, upstream: Upstream, tier: int, index: int) -> None:
        self.upstream = upstream
        self.weight = upstream.weight
        self.tier = tier
        self.index = index
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
        state = self.health.value
        if self.health is Health.HEALTHY and now < self.until:
            state = "recovering"
        elif self.health is Health.HEALTHY and now < self.ramp_until:
            state = "slow-start"
        return {
            "url": self.upstream.url,
            "weight": self.weight,
            "tier": TIER_NAMES[self.tier],
            "state": state,
            "in_flight": self.in_flight,
            "ewma_latency": self.ewma if self.sampled else None,
            "peak_ewma_latency": self.peak_cost(now) if self.sampled else None,
            "requests": self.requests,
            "failures": self.failures,
            "ejections": self.ejections,
        }
