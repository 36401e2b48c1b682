"""``Member``: the live state of one upstream inside a pool; ``MemberState``: a
reading of it.

Counters, latency estimates and health live in one ``Member`` per upstream that
every algorithm, transport and proxy sharing the pool reads and updates, under
the pool's lock. What the pool hands out (``Pool.members``, listeners'
arguments, ``Pool.snapshot()``) are readings taken under that lock instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
#: Seconds over which an old latency estimate loses its weight: an idle member's
#: estimate fades over it (least_response_time), and a sample taken after a long
#: gap weighs ``1 - exp(-gap / STALE_AFTER)`` (at least ``EWMA_ALPHA``).
STALE_AFTER = 10.0
#: The gap below which a sample weighs just ``EWMA_ALPHA`` (about 3.6 s).
_FRESH = -STALE_AFTER * math.log(1.0 - EWMA_ALPHA)


class Member:
    """One upstream's state in a pool. Mutated only by the pool.

    Each timed state has its own deadline, read only in that state: the end of
    an ejection (``ejected_until``), of the fail-back hold (``held_until``), of
    slow start (``ramp_until``, from ``ramp_start``) and of a drain
    (``drain_deadline``, ``math.inf`` for none). A member ejected because no one
    answered its connections is also probed (``probe_at``, ``math.inf`` for
    never; see ``HealthRules.probes_due``).
    """

    __slots__ = (
        "check_fails",
        "check_passes",
        "consecutive_5xx",
        "consecutive_gateway",
        "consecutive_local",
        "drain_deadline",
        "ejected_for",
        "ejected_until",
        "ejections",
        "ewma",
        "failures",
        "finished_mark",
        "health",
        "held_until",
        "in_flight",
        "last_ejection_end",
        "limit",
        "peak",
        "peak_stamp",
        "probe_at",
        "probe_gap",
        "ramp_start",
        "ramp_until",
        "refused",
        "requests",
        "sampled",
        "streak",
        "tier",
        "upstream",
        "waiting",
        "waiting_since",
        "weight",
    )

    def __init__(self, upstream: Upstream, tier: int) -> None:
        self.upstream = upstream
        self.weight = upstream.weight
        self.tier = tier
        self.in_flight = 0
        self.limit = upstream.max_connections  # the pool's default is set on admission
        self.waiting = 0  # requests in flight with no response yet
        self.waiting_since = 0.0  # the sum of their start times
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
        self.ejected_until = 0.0
        self.held_until = 0.0
        self.drain_deadline = math.inf
        self.ramp_start = 0.0
        self.ramp_until = 0.0
        self.ejections = 0
        self.ejected_for = ""  # the rule that last ejected it (``OutlierDetection``'s field)
        self.streak = 0  # ejections in a row, for the growing ejection time
        self.last_ejection_end = -math.inf
        self.finished_mark = 0  # requests finished when last admitted (latency outliers)
        self.check_passes = 0
        self.check_fails = 0
        self.refused = False  # its last attempt found no one listening
        self.probe_at = math.inf  # when ejected for that: the next connect probe
        self.probe_gap = 0.0  # and the wait before it, which doubles up to a cap

    def __repr__(self) -> str:
        return f"<Member {self.upstream.key} {self.health.value} in_flight={self.in_flight}>"

    # -- latency ---------------------------------------------------------------

    def observe(self, latency: float, now: float) -> None:
        """Fold one latency sample into the EWMA and the peak-EWMA.

        The EWMA gives a sample at least ``EWMA_ALPHA`` of the weight, and more
        when the last one is old (``STALE_AFTER``): an upstream probed after a
        long rest is judged on what it does now, not on what it did then.
        """
        if self.sampled:
            gap = now - self.peak_stamp
            if gap < 0.0:  # max(gap, 0.0) without the call: once per response
                gap = 0.0
            alpha = EWMA_ALPHA if gap <= _FRESH else 1.0 - math.exp(-gap / STALE_AFTER)
            self.ewma += alpha * (latency - self.ewma)
            peak = self.peak
            if latency > peak:
                self.peak = latency
            else:
                w = math.exp(-gap / PEAK_EWMA_DECAY)
                self.peak = peak * w + latency * (1.0 - w)
        else:
            self.sampled = True
            self.ewma = latency
            self.peak = latency
        self.peak_stamp = now

    def peak_cost(self, now: float) -> float:
        """The peak-EWMA estimate decayed to ``now`` (Finagle reads it this way)."""
        return self.peak * math.exp(-max(now - self.peak_stamp, 0.0) / PEAK_EWMA_DECAY)

    def waited(self, now: float) -> float:
        """How long the requests still waiting for a response have waited, on
        average: a lower bound on their mean latency, known before they end. O(1):
        the member keeps their count and the sum of their start times."""
        n = self.waiting
        return now - self.waiting_since / n if n else 0.0

    def answered(self, started: float) -> None:
        """A request started at ``started`` stopped waiting (a response, or its end)."""
        self.waiting -= 1
        self.waiting_since = self.waiting_since - started if self.waiting else 0.0

    def finished(self) -> int:
        """Requests finished (each one fed the latency estimate)."""
        return self.requests - self.in_flight

    # -- slow start ------------------------------------------------------------

    def ramp(self, now: float, min_share: float) -> float:
        """Share of full weight during slow start: 1.0 once the ramp is over."""
        if now >= self.ramp_until:
            return 1.0
        span = self.ramp_until - self.ramp_start
        return max(min_share, (now - self.ramp_start) / span) if span > 0 else 1.0

    # -- readings --------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        return snapshot_row(snapshot_values(self), now)

    def reading(self, now: float) -> MemberState:
        return member_state(snapshot_values(self), now)


@dataclass(frozen=True, slots=True)
class MemberState:
    """One upstream of a pool as it was when read: what ``Pool.members`` lists
    and what listeners of ``Pool.subscribe()`` receive. A value: later changes
    to the upstream do not show in it.

    ``health`` is the state (``state`` is its string, as in ``Pool.snapshot()``);
    ``tier`` is ``"primary"`` or ``"standby"``; latencies are in seconds, ``None``
    before the first sample.
    """

    upstream: Upstream
    tier: str
    health: Health
    weight: float
    in_flight: int
    ewma: float | None
    peak_ewma: float | None
    requests: int
    failures: int
    ejections: int
    max_connections: int | None = None

    @property
    def url(self) -> str:
        return self.upstream.url

    @property
    def state(self) -> str:
        """``healthy``, ``slow-start``, ``recovering``, ``ejected``, ``down`` or
        ``draining``."""
        return self.health.value


#: What a reading takes of a member, as one tuple: taken under the pool's lock
#: (one C call per member), turned into a row or a ``MemberState`` outside it.
snapshot_values = attrgetter(
    "upstream",
    "weight",
    "tier",
    "health",
    "in_flight",
    "sampled",
    "ewma",
    "peak",
    "peak_stamp",
    "requests",
    "failures",
    "ejections",
    "limit",
)


def _decayed(peak: float, stamp: float, now: float) -> float:
    return peak * math.exp(-max(now - stamp, 0.0) / PEAK_EWMA_DECAY)


def snapshot_row(values: tuple[Any, ...], now: float) -> dict[str, Any]:
    """One upstream of ``Pool.snapshot()``, from ``snapshot_values(member)``."""
    (upstream, weight, tier, health, in_flight, sampled, ewma, peak, stamp,
     requests, failures, ejections, limit) = values  # fmt: skip
    return {
        "url": upstream.url,
        "weight": weight,
        "tier": TIER_NAMES[tier],
        "state": health.value,
        "in_flight": in_flight,
        "ewma_latency": ewma if sampled else None,
        "peak_ewma_latency": _decayed(peak, stamp, now) if sampled else None,
        "requests": requests,
        "failures": failures,
        "ejections": ejections,
        "max_connections": limit,
    }


def member_state(values: tuple[Any, ...], now: float) -> MemberState:
    """A ``MemberState`` from ``snapshot_values(member)``."""
    (upstream, weight, tier, health, in_flight, sampled, ewma, peak, stamp,
     requests, failures, ejections, limit) = values  # fmt: skip
    return MemberState(
        upstream,
        TIER_NAMES[tier],
        health,
        weight,
        in_flight,
        ewma if sampled else None,
        _decayed(peak, stamp, now) if sampled else None,
        requests,
        failures,
        ejections,
        limit,
    )
