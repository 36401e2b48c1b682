"""``Subset``: each client of a large fleet balances over a few upstreams only.

With many clients over many upstreams, a client that spreads its requests over
all of them sees each one too rarely to know anything: its in-flight counts are
zero almost everywhere, and its latency estimates fade between two visits. Each
client taking a small subset instead (as Finagle's aperture does, and as the
Google SRE book describes for large services) sees a few upstreams often; when
every upstream is in the same number of subsets, load stays even.

The subsets here are arcs of a ring. The upstreams, ordered by a stable hash of
their key (the same order in every process), take intervals of the ring in
proportion to their weights; client ``i`` of ``n`` takes the arc that starts at
``i / n`` and spans at least ``size / len(upstreams)`` of the ring: a whole
number of the gaps between two clients' starts, as in Twitter's deterministic
aperture (weighted as in Finagle's weighted aperture). An upstream only partly
inside the arc gets that part of its weight. Every point of the ring is then
covered by the same number of arcs, and every arc holds the same weight, so
every upstream carries load in proportion to its weight (with equal weights:
the same load, and about ``size`` upstreams in every subset). One upstream
joining or leaving shifts each arc by about one upstream.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from ._algorithms._hashing import hash64
from ._errors import ConfigError
from ._upstream import MIN_WEIGHT, Upstream


def ring_widths(weights: Sequence[float]) -> list[int]:
    """Whole numbers in exact proportion to ``weights`` (ints and floats, whose
    ratios are exact: a float's denominator is a power of two), in lowest terms;
    equal weights give all 1."""
    ratios = [w.as_integer_ratio() for w in weights]
    common = math.lcm(*(d for _, d in ratios))
    widths = [n * (common // d) for n, d in ratios]
    divisor = math.gcd(*widths)
    return [w // divisor for w in widths]


@dataclass(frozen=True, slots=True)
class Subset:
    """Balance over ``size`` of the primaries only: this process is client
    ``client`` (from 0) of ``clients`` that share them.

    A subset spans ``size`` upstreams' worth of the ring or a little more: a
    whole number of ``upstreams / clients``, so that every upstream is in as many
    subsets (with 1,000 upstreams of one weight and 100 clients, 20 gives 20,
    each upstream in two subsets). Upstreams take room on the ring in proportion
    to their weights, so a subset holds more of the light ones and fewer of the
    heavy ones, the same weight in every subset; an upstream heavier than a
    subset's span makes up whole subsets on its own, as in Finagle's weighted
    aperture.

    ``client`` and ``clients`` usually come from the deployment (a StatefulSet
    ordinal, a task index and the replica count). Standbys are not subset.
    """

    size: int
    client: int
    clients: int

    def __post_init__(self) -> None:
        for name in ("size", "clients"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"subset.{name}", f"must be a whole number >= 1, got {value!r}")
        client, clients = self.client, self.clients
        if isinstance(client, bool) or not isinstance(client, int) or not 0 <= client < clients:
            raise ConfigError(
                "subset.client", f"must be a whole number from 0 to {clients - 1}, got {client!r}"
            )

    def choose(self, upstreams: Sequence[Upstream]) -> list[Upstream]:
        """This client's upstreams of ``upstreams``, with the weight of those only
        partly in its arc scaled down; all of them when there are ``size`` or fewer."""
        n, per = len(upstreams), self.clients
        # the arc spans a whole number of the gaps between clients (1 / clients
        # of the ring each), so that every point of the ring is in as many arcs
        gaps = -(-self.size * per // n)  # ceil(size / (n / clients))
        if n <= self.size or gaps >= per:
            return list(upstreams)
        ring = sorted(upstreams, key=lambda u: (hash64(u.key), u.key))
        # In whole units, so that the arithmetic is exact: upstream j spans
        # [edges[j] * clients, edges[j + 1] * clients) of a ring of total * clients,
        # and client c's arc starts at c * total.
        widths = ring_widths([u.weight for u in ring])
        edges = list(accumulate(widths, initial=0))
        total = edges[-1]
        start = self.client * total
        end = start + gaps * total
        shares: dict[int, int] = {}
        k = bisect_right(edges, start // per) - 1  # the upstream where the arc starts
        while True:  # k counts on past n where the arc wraps around the ring
            j = k % n
            low = (edges[j] + k // n * total) * per
            if low >= end:
                break
            part = min(low + widths[j] * per, end) - max(low, start)
            shares[j] = shares.get(j, 0) + part
            k += 1
        chosen = []
        for j, part in shares.items():
            up = ring[j]
            whole = widths[j] * per
            if part >= whole:
                chosen.append(up)
            else:
                weight = max(MIN_WEIGHT, up.weight * part / whole)
                chosen.append(Upstream(up.url, weight, up.max_connections))
        return chosen
