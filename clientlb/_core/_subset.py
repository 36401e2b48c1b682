"""``Subset``: each client of a large fleet balances over a few upstreams only.

With many clients over many upstreams, a client that spreads its requests over
all of them sees each one too rarely to know anything: its in-flight counts are
zero almost everywhere, and its latency estimates fade between two visits. Each
client taking a small subset instead (as Finagle's aperture does, and as the
Google SRE book describes for large services) sees a few upstreams often; when
every upstream is in the same number of subsets, load stays even.

The subsets here are arcs of a ring. The upstreams, ordered by a stable hash of
their key (the same order in every process), take equal intervals of the ring;
client ``i`` of ``n`` takes the arc that starts at ``i / n`` and spans at least
``size`` upstreams: a whole number of the gaps between two clients' starts, as
in Twitter's deterministic aperture. An upstream only partly inside the arc gets
that part of its weight. Every point of the ring is then covered by the same
number of arcs, so every upstream carries the same load, and one upstream
joining or leaving shifts each arc by about one upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._algorithms._hashing import hash64
from ._errors import ConfigError
from ._upstream import MIN_WEIGHT, Upstream


@dataclass(frozen=True, slots=True)
class Subset:
    """Balance over ``size`` of the primaries only: this process is client
    ``client`` (from 0) of ``clients`` that share them.

    A subset holds ``size`` upstreams or a few more: a whole number of
    ``upstreams / clients``, so that every upstream is in as many subsets (with
    1,000 upstreams and 100 clients, 20 gives 20, each upstream in two subsets).

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
        # the arc spans a whole number of the gaps between clients (n / clients
        # upstreams each), so that every point of the ring is in as many arcs
        gaps = -(-self.size * per // n)  # ceil(size / (n / clients))
        if n <= self.size or gaps >= per:
            return list(upstreams)
        ring = sorted(upstreams, key=lambda u: (hash64(u.key), u.key))
        # In units of 1/clients of an upstream, so that the arithmetic is exact:
        # upstream j spans [j * clients, (j + 1) * clients).
        start = self.client * n
        end = start + gaps * n
        shares: dict[int, int] = {}
        j = start // per
        while j * per < end:
            part = min((j + 1) * per, end) - max(j * per, start)
            shares[j % n] = shares.get(j % n, 0) + part
            j += 1
        chosen = []
        for j, part in shares.items():
            up = ring[j]
            if part >= per:
                chosen.append(up)
            else:
                weight = max(MIN_WEIGHT, up.weight * part / per)
                chosen.append(Upstream(up.url, weight, up.max_connections))
        return chosen
