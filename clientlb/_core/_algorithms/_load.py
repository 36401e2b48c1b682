"""Algorithms that read load: least connections, least response time, power of two
choices and peak-EWMA."""

from __future__ import annotations

import math
from collections.abc import Container, Sequence

from .._member import STALE_AFTER, Member
from ._base import Algorithm, load_per_weight, remaining
from ._rotation import WeightedRoundRobin

#: Latency estimates below this (1 us) count as this: below clock noise.
_TINY = 1e-6


def turns(algorithm: Algorithm, members: Sequence[Member]) -> WeightedRoundRobin:
    """Smooth weighted round robin over ``members``, to offer each pick its turn.

    The rotation starts at a random member, as ``round_robin`` does: a fleet of
    clients that all started at the first would offer their requests to the
    same upstream at the same moment, one from each client (a herd)."""
    rotation = WeightedRoundRobin().bind(algorithm.rng, algorithm.clock)
    rotation.rotates = False  # rotated here, members and all
    start = algorithm.rng.randrange(len(members)) if members else 0
    rotation.rebuild([*members[start:], *members[:start]])
    return rotation


class _Group:
    """Members of one weight, bucketed by in-flight count, with the lowest count known."""

    __slots__ = ("buckets", "lowest", "weight")

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.buckets: dict[int, list[Member]] = {}
        self.lowest = 0


class LeastConnections(Algorithm):
    """Fewest in-flight requests per unit of weight, ``(in_flight + 1) / weight``;
    at low load, the weights.

    Each pick first offers the request to the member whose turn it is in smooth
    weighted round robin (nginx's sequence, ``weighted_round_robin``): an idle
    one takes it. Otherwise the least loaded does, exact, ties broken at random.
    So one request at a time over weights 5, 1, 1 goes 5:1:1 (as with nginx's
    ``least_conn``, where idle members tie and weighted round robin decides),
    while a busy pool still sends each request to its least loaded member, and
    turns never give a member more than its weight's share.

    O(distinct weights) per pick and O(1) per change: members of equal weight
    sit in buckets by in-flight count, and a count only ever moves by one, so
    the lowest bucket is tracked without a scan.
    """

    name = "least_connections"
    tracks_load = True

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.turns = turns(self, self.members)
        groups: dict[float, _Group] = {}
        self.place: dict[Member, tuple[_Group, int, int]] = {}  # group, bucket, position
        for m in self.members:
            group = groups.get(m.weight)
            if group is None:
                group = groups[m.weight] = _Group(m.weight)
            self._put(group, m, m.in_flight)
        self.groups = list(groups.values())
        for group in self.groups:
            group.lowest = min(group.buckets)

    def _put(self, group: _Group, m: Member, load: int) -> None:
        bucket = group.buckets.get(load)
        if bucket is None:
            bucket = group.buckets[load] = []
        self.place[m] = (group, load, len(bucket))
        bucket.append(m)

    def changed(self, member: Member) -> None:
        where = self.place.get(member)
        if where is None:
            return
        group, load, position = where
        new = member.in_flight
        if new == load:
            return
        bucket = group.buckets[load]
        last = bucket.pop()
        if last is not member:
            bucket[position] = last
            self.place[last] = (group, load, position)
        if not bucket:
            del group.buckets[load]
        self._put(group, member, new)
        if new < group.lowest:
            group.lowest = new
        elif load == group.lowest and not bucket:
            group.lowest = min(group.buckets)

    def score_of(self, member: Member) -> float | None:
        return load_per_weight(member)

    def pick(self, key: str | None, exclude: Container[Member]) -> Member | None:
        groups = self.groups
        if not groups:
            return None
        turn = self.turns.pick(None, ())
        if turn is not None and not turn.in_flight and not (exclude and turn in exclude):
            return turn
        if len(groups) == 1:
            group = groups[0]
            bucket = group.buckets[group.lowest]
        else:
            best = min((g.lowest + 1) / g.weight for g in groups)
            tied = [g.buckets[g.lowest] for g in groups if (g.lowest + 1) / g.weight == best]
            if len(tied) == 1:
                bucket = tied[0]
            else:
                i = self.rng.randrange(sum(len(b) for b in tied))
                for bucket in tied:
                    if i < len(bucket):
                        break
                    i -= len(bucket)
        member = bucket[int(self.rng.random() * len(bucket))]
        if exclude and member in exclude:
            allowed = remaining(self.members, exclude)
            if not allowed:
                return None
            best_load = min(load_per_weight(m) for m in allowed)
            return self.rng.choice([m for m in allowed if load_per_weight(m) == best_load])
        return member


class LeastResponseTime(Algorithm):
    """Lowest ``estimate * (in_flight + 1) / weight``, where the estimate is the
    member's latency EWMA; at low load, the weights among equally fast members.

    The estimate (for a member with no sample yet: the pool's mean EWMA when the
    candidates were last rebuilt, or 1 ms) is also:

    * while requests wait for an answer, at least their mean wait: they have
      taken that long already, so a member that stalls costs more at once, not
      only when its slow answers come back;
    * while the member is idle, faded towards zero over ``STALE_AFTER`` (10 s)
      since its last sample (one never sampled: since the candidates were
      rebuilt), so that an upstream whose first answers were slow
      is tried again after a while instead of never (and the sample it then gets
      weighs more, being the only recent one). One 100 times slower than the
      others is retried once they look 100 times busier: with a few requests in
      flight each, about every 30 s.

    Each pick first offers the request to the member whose turn it is in smooth
    weighted round robin (nginx's sequence): it takes it if it is idle and its
    latency as measured (the estimate before any fading) is within 1% of the
    best member's, so one request at a time over equally fast members with
    weights 5, 1, 1 goes 5:1:1. Fading does not make a member as fast as the
    others: one slower by its samples gets a request again when its faded score
    is the lowest, not on its turns, whatever its weight. Otherwise the lowest
    score wins, exactly, as before.

    Scores live in an indexed heap, as ``log(score) + t / STALE_AFTER`` (``t``
    the time now): at any one time, ordering by it is ordering by score. An idle
    member's key is then a constant (its fading cancels the ``t``), so a pool of
    thousands of idle members costs no more per pick than a small one; a busy
    one's only grows with time (its mean wait grows; its estimate does not
    fade), and there are only as many busy members as requests in flight. The
    heap is lazy about increases: a stored key is never
    above the true key, a decrease is applied at once (sift up), and an increase
    waits until the member reaches the top, where a pick refreshes it (sift
    down) before trusting it. The top is then exactly the minimum, at about two
    heap moves per request.
    """

    name = "least_response_time"
    tracks_load = True
    default_latency = 0.001
    #: How much slower (relatively, by measured latency) than the best an idle
    #: member may be and still take its turn.
    tolerance = 0.01

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.turns = turns(self, self.members)
        self.slack = 1.0 + self.tolerance
        sampled = [m.ewma for m in self.members if m.sampled]
        self.seed = sum(sampled) / len(sampled) if sampled else self.default_latency
        self.epoch = now = self.clock()
        scored = sorted((self._key(m, now), i) for i, m in enumerate(self.members))
        self.keys = [key for key, _ in scored]
        self.heap = [self.members[i] for _, i in scored]
        self.pos = {m: i for i, m in enumerate(self.heap)}

    def estimate(self, m: Member, now: float) -> float:
        """The member's latency estimate at ``now``, in seconds."""
        if not m.in_flight:  # idle: faded since its last sample (or since it joined)
            base, stamp = (m.ewma, m.peak_stamp) if m.sampled else (self.seed, self.epoch)
            return max(base, _TINY) * math.exp((stamp - now) / STALE_AFTER)
        return self.measured(m, now)

    def measured(self, m: Member, now: float) -> float:
        """The member's latency as measured, in seconds: the estimate without
        the fading of an idle member (what turns compare)."""
        estimate = m.ewma if m.sampled else self.seed
        if m.waiting:
            waited = now - m.waiting_since / m.waiting
            if waited > estimate:
                estimate = waited
        return max(estimate, _TINY)

    def score_of(self, member: Member) -> float | None:
        return self.score(member, self.clock())

    def score(self, m: Member, now: float) -> float:
        """``estimate * (in_flight + 1) / weight`` at ``now``."""
        return self.estimate(m, now) * (m.in_flight + 1) / m.weight

    def _key(self, m: Member, now: float) -> float:
        """``log(score) + (now - epoch) / STALE_AFTER``: the heap's key."""
        if not m.in_flight:  # idle: the fading cancels the time
            base, stamp = (m.ewma, m.peak_stamp) if m.sampled else (self.seed, self.epoch)
            return math.log(max(base, _TINY) / m.weight) + (stamp - self.epoch) / STALE_AFTER
        return math.log(self.score(m, now)) + (now - self.epoch) / STALE_AFTER

    def changed(self, member: Member) -> None:
        i = self.pos.get(member)
        if i is None:
            return
        key = self._key(member, self.clock())
        if key >= self.keys[i]:
            return  # an increase: applied when the member reaches the top
        keys, heap, pos = self.keys, self.heap, self.pos
        while i > 0:
            parent = (i - 1) >> 1
            if keys[parent] <= key:
                break
            keys[i] = keys[parent]
            heap[i] = heap[parent]
            pos[heap[i]] = i
            i = parent
        keys[i] = key
        heap[i] = member
        pos[member] = i

    def _refresh_top(self, now: float) -> Member:
        """Apply pending increases at the top until its stored key is its key now."""
        keys, heap, pos = self.keys, self.heap, self.pos
        n = len(heap)
        while True:
            member = heap[0]
            key = self._key(member, now)
            if key <= keys[0]:
                return member
            i = 0
            while True:
                child = 2 * i + 1
                if child >= n:
                    break
                right = child + 1
                if right < n and keys[right] < keys[child]:
                    child = right
                if keys[child] >= key:
                    break
                keys[i] = keys[child]
                heap[i] = heap[child]
                pos[heap[i]] = i
                i = child
            keys[i] = key
            heap[i] = member
            pos[member] = i

    def pick(self, key: str | None, exclude: Container[Member]) -> Member | None:
        if not self.heap:
            return None
        now = self.clock()
        top = self._refresh_top(now)
        turn = self.turns.pick(None, ())
        if (
            turn is not None
            and turn is not top
            and not turn.in_flight
            and not (exclude and turn in exclude)
            and self.measured(turn, now) <= self.measured(top, now) * self.slack
        ):
            return turn
        if not exclude or top not in exclude:
            return top
        allowed = remaining(self.members, exclude)
        return min(allowed, key=lambda m: self.score(m, now)) if allowed else None


class PowerOfTwo(Algorithm):
    """Two distinct members at random; the one with fewer in-flight per weight."""

    name = "power_of_two"

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)

    def cost(self, m: Member) -> float:
        return load_per_weight(m)

    def score_of(self, member: Member) -> float | None:
        return self.cost(member)

    def pick(self, key: str | None, exclude: Container[Member]) -> Member | None:
        a, b = self._two(self.members)
        if exclude and (a in exclude or b in exclude):  # redraw among the allowed only
            a, b = self._two(remaining(self.members, exclude))
        if a is None:
            return None
        if b is None:
            return a
        return b if self.cost(b) < self.cost(a) else a

    def _two(self, members: Sequence[Member]) -> tuple[Member | None, Member | None]:
        """Two distinct members, drawn without replacement."""
        n = len(members)
        if n < 2:
            return (members[0] if n else None), None
        random = self.rng.random
        i = int(random() * n)
        j = int(random() * (n - 1))
        if j >= i:
            j += 1
        return members[i], members[j]


class PeakEwma(PowerOfTwo):
    """Two distinct members at random; the lower peak-EWMA cost (Finagle, Linkerd).

    Cost is the peak-sensitive latency estimate, decayed over 10 s, times
    ``(in_flight + 1) / weight``. While requests wait for an answer, the estimate
    is at least their mean wait, so a member that stalls is avoided before its
    slow answers arrive. A member never measured costs nothing while idle and a
    large penalty once it has requests outstanding.

    An idle member's estimate decays towards zero, which is how a slow member
    gets tried again: one 100 times slower than members at a few requests in
    flight each waits about 30 s for that.
    """

    name = "peak_ewma"
    penalty = 1e6

    def cost(self, m: Member) -> float:
        if not m.sampled:
            return self.penalty * m.in_flight / m.weight
        now = self.clock()
        estimate = m.peak_cost(now)
        if m.waiting:
            waited = now - m.waiting_since / m.waiting
            if waited > estimate:
                estimate = waited
        return estimate * load_per_weight(m)
