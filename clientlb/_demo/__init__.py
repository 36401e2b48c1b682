"""``clientlb demo``: a live tour on loopback.

Three primaries and a standby run as uvicorn servers in this process, and eight
clients send requests through an ``AsyncBalancingTransport`` with the library's
defaults. A scripted story happens to the replicas (steady traffic, a slow
replica, a crash, failover to the standby, recovery, fail-back) while a live view
shows what the pool does about it; the pool's status page is served meanwhile,
and a summary ends the run. ``--compare`` tells a shorter story once per
algorithm and prints the figures side by side.
"""

from __future__ import annotations

import sys

import anyio

from ._compare import compare
from ._story import PHASES, tell
from ._view import choose_view, summary_lines

#: Seconds the story lasts by default: alone, and per algorithm with --compare.
DURATION = 30.0
COMPARE_DURATION = 6.0


async def _live(algorithm: str, duration: float) -> None:
    summary = await tell(algorithm, duration, choose_view(duration))
    print()
    for line in summary_lines(summary):
        print(line)


def main(
    algorithm: str = "least_response_time",
    duration: float | None = None,
    *,
    compare_all: bool = False,
    plot: str | None = None,
) -> int:
    """Run the demo; returns the process exit status."""
    try:
        if compare_all:
            anyio.run(compare, duration or COMPARE_DURATION, plot)
        else:
            anyio.run(_live, algorithm, duration or DURATION)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


__all__ = ["PHASES", "main"]
