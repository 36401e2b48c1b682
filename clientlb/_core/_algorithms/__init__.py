"""The balancing algorithms.

Each algorithm holds the candidates of one tier (``rebuild``) and picks one per
request (``pick``). They are built for pools of thousands of upstreams: every pick is
O(1), O(log n) or O(number of distinct weights); only a pick that must skip
excluded upstreams (a retry) may fall back to a scan.

An algorithm that reads in-flight counts or latency sets ``tracks_load`` and is
told through ``changed(member)`` after every change, so that it can keep its index
(buckets, heap) exact. Algorithms never mutate members.
"""

from __future__ import annotations

from .._errors import ConfigError
from ._base import Algorithm
from ._hashing import ConsistentHash, IpHash, hash64
from ._load import LeastConnections, LeastResponseTime, PeakEwma, PowerOfTwo
from ._rotation import Random, RoundRobin, WeightedRoundRobin

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "ConsistentHash",
    "IpHash",
    "LeastConnections",
    "LeastResponseTime",
    "PeakEwma",
    "PowerOfTwo",
    "Random",
    "RoundRobin",
    "WeightedRoundRobin",
    "hash64",
    "make_algorithm",
]

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        WeightedRoundRobin,
        LeastConnections,
        LeastResponseTime,
        IpHash,
        Random,
        PowerOfTwo,
        PeakEwma,
        ConsistentHash,
    )
}


def make_algorithm(value: object, field: str = "algorithm") -> Algorithm:
    """An algorithm from its name (see ``ALGORITHMS``) or an ``Algorithm`` object."""
    if isinstance(value, Algorithm):
        return value
    if isinstance(value, str):
        cls = ALGORITHMS.get(value)
        if cls is None:
            names = ", ".join(ALGORITHMS)
            raise ConfigError(field, f"unknown algorithm {value!r}; valid names: {names}")
        return cls()
    if isinstance(value, type) and issubclass(value, Algorithm):
        return value()
    raise ConfigError(field, f"expected an algorithm name or Algorithm, got {value!r}")
