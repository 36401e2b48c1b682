"""Algorithms that take turns: round robin, smooth weighted round robin, random."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Container, Sequence
from itertools import accumulate

from .._member import Member
from ._base import Algorithm, remaining


class RoundRobin(Algorithm):
    """Each candidate in turn, in a fixed cyclic order; weights are ignored.

    The cycle starts at a random place so that many clients do not move in step.
    """

    name = "round_robin"

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.next = self.rng.randrange(len(members)) if members else 0

    def pick(self, key: str | None, exclude: Container[Member]) -> Member | None:
        members = self.members
        n = len(members)
        for _ in range(n):
            i = self.next % n
            self.next = i + 1
            m = members[i]
            if not exclude or m not in exclude:
                return m
        return None


class _Cohort:
    """Members of one weight, in configuration order, how often it was picked, and
    which of them takes its first turn (``offset``)."""

    __slots__ = ("indexes", "offset", "picks", "weight")

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.indexes: list[int] = []
        self.picks = 0
        self.offset = 0


class WeightedRoundRobin(Algorithm):
    """Smooth weighted round robin: nginx's sequence, in O(distinct weights).

    nginx adds every weight to a running score, picks the highest (the first on a
    tie) and takes the total off it. After t picks a member's score is
    ``t * weight - total * picks``; members of equal weight are therefore picked in
    configuration order, one round after another, and the best member of each weight
    group is known without looking at the others. For weights 5, 1, 1 this gives
    a a b a c a a.

    Members of one weight take their turns from a random one of them (b or c
    above), as ``round_robin`` starts at a random place: a fleet of clients that
    all began with the first would send each request to the same upstream at the
    same moment (a herd). Each member's share of every period is nginx's.
    """

    name = "weighted_round_robin"
    #: Start each weight's members at a random one (off where the caller rotates).
    rotates = True

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        groups: dict[float, _Cohort] = {}
        for i, m in enumerate(self.members):
            cohort = groups.get(m.weight)
            if cohort is None:
                cohort = groups[m.weight] = _Cohort(m.weight)
            cohort.indexes.append(i)
        self.cohorts = list(groups.values())
        for cohort in self.cohorts if self.rotates else ():
            if len(cohort.indexes) > 1:
                cohort.offset = self.rng.randrange(len(cohort.indexes))
        self.total = sum(m.weight for m in self.members)
        integral = all(float(m.weight).is_integer() for m in self.members)
        self.period = int(self.total) if integral else 0
        self.t = 0
        self.fallback = 0

    def pick(self, key: str | None, exclude: Container[Member]) -> Member | None:
        if not self.members:
            return None
        t = self.t + 1
        total = self.total
        best = self.cohorts[0]
        best_score = -math.inf
        best_index = 0
        for cohort in self.cohorts:
            indexes = cohort.indexes
            n = len(indexes)
            picks = cohort.picks
            score = t * cohort.weight - total * (picks // n)
            index = indexes[(picks + cohort.offset) % n]
            if score > best_score or (score == best_score and index < best_index):
                best, best_score, best_index = cohort, score, index
        member = self.members[best_index]
        if exclude and member in exclude:
            return self._skip(exclude)
        best.picks += 1
        self.t = t
        if t == self.period:  # a full period: every score is back at zero
            self.t = 0
            for cohort in self.cohorts:
                cohort.picks = 0
        return member

    def _skip(self, exclude: Container[Member]) -> Member | None:
        """A retry: the next allowed member in order, leaving the sequence as it is."""
        n = len(self.members)
        for _ in range(n):
            self.fallback = (self.fallback + 1) % n
            m = self.members[self.fallback]
            if m not in exclude:
                return m
        return None


class Random(Algorithm):
    """Uniformly at random, or in proportion to weight when weights differ."""

    name = "random"

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        weights = [m.weight for m in self.members]
        self.uniform = len(set(weights)) <= 1
        self.cumulative = list(accumulate(weights))

    def pick(self, key: str | None, exclude: Container[Member]) -> Member | None:
        members = self.members
        if not members:
            return None
        if self.uniform:
            m = members[int(self.rng.random() * len(members))]
        else:
            total = self.cumulative[-1]
            i = bisect_right(self.cumulative, self.rng.random() * total)
            m = members[min(i, len(members) - 1)]
        if exclude and m in exclude:
            allowed = remaining(members, exclude)
            if not allowed:
                return None
            return self.rng.choices(allowed, weights=[a.weight for a in allowed])[0]
        return m
