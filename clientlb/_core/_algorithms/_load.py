"""Algorithms that read load: least connections, least response time, power of two
choices and peak-EWMA."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .._member import Member
from ._base import Algorithm, load_per_weight, remaining


class _Group:
    """Members of one weight, bucketed by in-flight count, with the lowest count known."""

    __slots__ = ("buckets", "lowest", "weight")

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.buckets: dict[int, list[Member]] = {}
        self.lowest = 0


class LeastConnections(Algorithm):
    """Fewest in-flight requests per unit of weight: ``(in_flight + 1) / weight``.

    Exact, in O(distinct weights) per pick and O(1) per change: members of equal
    weight sit in buckets by in-flight count, and a count only ever moves by one,
    so the lowest bucket is tracked without a scan. Ties are broken at random.
    """

    name = "least_connections"
    tracks_load = True

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
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

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        groups = self.groups
        if not groups:
            return None
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
    """Lowest ``EWMA latency * (in_flight + 1) / weight``, kept in an indexed heap.

    The heap is lazy about increases: a member's stored key is never above its true
    score, a decrease is applied at once (sift up), and an increase waits until the
    member reaches the top, where a pick refreshes it (sift down) before trusting
    it. The top is then exactly the minimum, at about two heap moves per request
    instead of three.

    A member with no latency sample yet is scored with the pool's mean latency at the
    time it joined (1 ms if nothing is known), so it is tried but not flooded.
    """

    name = "least_response_time"
    tracks_load = True
    default_latency = 0.001

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        sampled = [m.ewma for m in self.members if m.sampled]
        self.seed = sum(sampled) / len(sampled) if sampled else self.default_latency
        scored = sorted((self._score(m), i) for i, m in enumerate(self.members))
        self.keys = [score for score, _ in scored]
        self.heap = [self.members[i] for _, i in scored]
        self.pos = {m: i for i, m in enumerate(self.heap)}

    def _score(self, m: Member) -> float:
        return (m.ewma if m.sampled else self.seed) * (m.in_flight + 1) / m.weight

    def changed(self, member: Member) -> None:
        i = self.pos.get(member)
        if i is None:
            return
        m = member  # the score, inline: this runs three times per request
        key = (m.ewma if m.sampled else self.seed) * (m.in_flight + 1) / m.weight
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

    def _refresh_top(self) -> Member:
        """Apply pending increases at the top until its stored key is its score."""
        keys, heap, pos = self.keys, self.heap, self.pos
        n = len(heap)
        seed = self.seed
        while True:
            member = heap[0]
            key = (member.ewma if member.sampled else seed) * (member.in_flight + 1) / member.weight
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

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        if not self.heap:
            return None
        top = self._refresh_top()
        if not exclude or top not in exclude:
            return top
        allowed = remaining(self.members, exclude)
        return min(allowed, key=self._score) if allowed else None


class PowerOfTwo(Algorithm):
    """Two distinct members at random; the one with fewer in-flight per weight."""

    name = "power_of_two"

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)

    def cost(self, m: Member) -> float:
        return (m.in_flight + 1) / m.weight

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
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
    ``(in_flight + 1) / weight``. A member never measured costs nothing while idle
    and a large penalty once it has requests outstanding.
    """

    name = "peak_ewma"
    penalty = 1e6

    def cost(self, m: Member) -> float:
        if not m.sampled:
            return self.penalty * m.in_flight / m.weight
        return m.peak_cost(self.clock()) * (m.in_flight + 1) / m.weight
