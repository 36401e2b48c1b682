"""``clientlb demo --compare``: the same story once per algorithm, side by side.

Prints one table (latency quantiles, each upstream's share, primary-3's share
while it was slow, client-visible errors, fail-back time) and, with ``--plot
FILE``, draws it as a PNG when matplotlib is installed (it is not a dependency).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .._core import ALGORITHMS
from ._story import PRIMARIES, STANDBY, Summary, settings_note, tell
from ._view import QuietView, ms, share, table_lines

NAMES = (*PRIMARIES, STANDBY)


async def compare(duration: float, plot: str | None) -> list[Summary]:
    """Tell the story for every algorithm, ``duration`` seconds each; print the table."""
    print(
        f"clientlb demo --compare: the same story ({duration:g} s) for each of "
        f"{len(ALGORITHMS)} algorithms (primary-3 slow from phase 2, primary-1 down from 3)"
    )
    for line in settings_note(None):
        print(line)
    results = []
    for name in ALGORITHMS:
        summary = await tell(name, duration, QuietView(), status_page=False)
        results.append(summary)
        print(f"  {name}: {summary.answers} answers, {summary.errors} errors", flush=True)
    print()
    for line in compare_lines(results):
        print(line)
    if plot is not None:
        print(draw(results, plot))
    else:
        print("(--plot FILE draws these figures as a PNG; it needs matplotlib)")
    return results


def compare_lines(results: list[Summary]) -> list[str]:
    """One row per algorithm: p50, p99, each upstream's share, and the rest."""
    headers = (
        "algorithm",
        "p50",
        "p99",
        *NAMES,
        "p3 while slow",
        "errors",
        "fail-back",
    )
    rows = []
    for s in results:
        shares = {r["name"]: r["share"] for r in s.rows}
        back = "-" if s.fail_back is None else f"{s.fail_back:.2f} s"
        rows.append(
            [
                s.algorithm,
                ms(s.p50),
                ms(s.p99),
                *(share(shares.get(n)) for n in NAMES),
                share(s.slow_share),
                str(s.errors),
                back,
            ]
        )
    return table_lines(headers, rows)


def draw(results: list[Summary], path: str) -> str:
    """Plot latency quantiles and shares per algorithm into ``path``; the line to print."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    names = [s.algorithm for s in results]
    ticks = range(len(names))
    figure, (latency, shares) = pyplot.subplots(2, 1, figsize=(10, 8), sharex=True)
    for q, label, offset in (("p50", "p50", -0.2), ("p99", "p99", 0.2)):
        values = [(getattr(s, q) or 0.0) * 1000 for s in results]
        latency.bar([t + offset for t in ticks], values, width=0.4, label=label)
    latency.set_yscale("log")
    latency.set_ylabel("latency (ms, log scale)")
    latency.set_title("The demo's story, per algorithm")
    latency.legend()
    bottom = [0.0] * len(results)
    for upstream in NAMES:
        values = [
            next((r["share"] for r in s.rows if r["name"] == upstream), 0.0) * 100 for s in results
        ]
        shares.bar(list(ticks), values, bottom=bottom, label=upstream)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    shares.set_ylabel("share of answers (%)")
    shares.set_xticks(list(ticks), names, rotation=30, ha="right")
    shares.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return "no plot written"
    finally:
        pyplot.close(figure)
    return f"plot written to {path}"
