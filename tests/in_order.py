"""An algorithm whose picks a test can foresee."""

from __future__ import annotations

from clientlb._core._algorithms._rotation import WeightedRoundRobin


class InOrder(WeightedRoundRobin):
    """``weighted_round_robin`` as nginx runs it: each weight's upstreams from the
    first, in configuration order (the library starts at a random one, so that a
    fleet does not move in step). For tests that need to know which upstream the
    first pick takes: with equal weights, a, b, a, b..."""

    rotates = False
