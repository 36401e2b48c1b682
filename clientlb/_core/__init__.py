"""The sans-IO core of clientlb.

This package contains no networking code at all, and imports only the standard
library. It holds the upstream state, the balancing algorithms, the pool with its
tiers and health decisions, and the retry plan. The httpx transports, the ASGI/WSGI
proxies and the discovery providers are thin drivers over it: they call
``pool.pick()`` and report what happened through the returned ``Lease``.

Time and randomness are injected (``clock=``, ``rng=``) so that every decision can
be tested without sockets and without sleeping.
"""

from ._algorithms import (
    ALGORITHMS,
    Algorithm,
    ConsistentHash,
    IpHash,
    LeastConnections,
    LeastResponseTime,
    PeakEwma,
    PowerOfTwo,
    Random,
    RoundRobin,
    WeightedRoundRobin,
    make_algorithm,
)
from ._decision import Candidate, Decision
from ._errors import ConfigError, NoUpstream
from ._history import Attempt
from ._member import Member, MemberState
from ._outcome import Outcome
from ._plan import AttemptPlan
from ._policies import HealthCheck, OutlierDetection, RetryBudget, RetryPolicy
from ._pool import Lease, Pool
from ._slots import Saturated, SlotWait
from ._state import Health
from ._sticky import Pins, StickyCookie
from ._subset import Subset
from ._upstream import Upstream

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Attempt",
    "Candidate",
    "Decision",
    "AttemptPlan",
    "ConfigError",
    "ConsistentHash",
    "Health",
    "HealthCheck",
    "IpHash",
    "Lease",
    "LeastConnections",
    "LeastResponseTime",
    "Member",
    "MemberState",
    "NoUpstream",
    "Outcome",
    "OutlierDetection",
    "PeakEwma",
    "Pins",
    "Pool",
    "PowerOfTwo",
    "Random",
    "RetryBudget",
    "RetryPolicy",
    "RoundRobin",
    "Saturated",
    "SlotWait",
    "StickyCookie",
    "Subset",
    "Upstream",
    "WeightedRoundRobin",
    "make_algorithm",
]
