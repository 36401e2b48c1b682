"""Tables (Markdown) and figures (PNG, matplotlib: a benchmark-only dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._fleet import Result
from ._study import Scale, summary


def share(result: Result, servers: Sequence[int]) -> float:
    """The share of measured requests that servers ``servers`` received."""
    total = sum(result.received)
    return sum(result.received[i] for i in servers) / total if total else 0.0


def validation_table(results: Sequence[Result], watched: int) -> str:
    """One row per run: quantiles and the share of server ``watched``."""
    rows = [
        "| algorithm | requests | p50 ms | p99 ms | p99.9 ms | max ms | to server "
        f"{watched} | shares of servers 0..n (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        s = summary(r)
        total = sum(r.received)
        shares = "/".join(f"{100 * x / total:.1f}" for x in r.received)
        rows.append(
            f"| {r.name} | {s['measured']:,} | {s['p50']:.1f} | {s['p99']:.1f} | "
            f"{s['p99.9']:.1f} | {s['max']:.1f} | {r.received[watched]:,} "
            f"({100 * r.received[watched] / total:.2f}%) | {shares} |"
        )
    return "\n".join(rows)


def scale_table(results: Sequence[Result], scale: Scale) -> str:
    """The scale study's table, with each p99 against the oracle's."""
    oracle = next((r for r in results if r.name == "oracle"), None)
    base = summary(oracle)["p99"] if oracle is not None else float("nan")
    slowed, dying = scale.slowed(), scale.dying()
    rows = [
        "| algorithm | p50 ms | p99 ms | p99.9 ms | max ms | p99 / oracle | failed | spread "
        "(max/mean load) | peak outstanding | to the slowed | to the dying | run s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s = summary(r)
        rows.append(
            f"| {r.name} | {s['p50']:.0f} | {s['p99']:,.0f} | {s['p99.9']:,.0f} | "
            f"{s['max']:,.0f} | {s['p99'] / base:.2f}x | {s['failed']} | {s['spread']:.2f} | "
            f"{s['peak']} | {100 * share(r, slowed):.2f}% | {100 * share(r, dying):.2f}% | "
            f"{r.seconds:.1f} |"
        )
    return "\n".join(rows)


def plot_scale(
    results: Sequence[Result], scale: Scale, directory: Path, suffix: str = ""
) -> list[Path]:
    """The latency tail per algorithm, and the herding picture: the most
    requests outstanding at any one server over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        ordered = sorted(r.latencies)
        n = len(ordered)
        if not n:
            continue
        # about 2,000 points, denser in the tail: 1 - CDF from 1 down to 1/n
        ranks = sorted({min(n - 1, int(n * (1 - 10 ** (-5 * k / 2000)))) for k in range(2001)})
        style = {"color": "black", "linestyle": "--"} if r.name == "oracle" else {}
        ax.plot(
            [ordered[i] * 1e3 for i in ranks], [1 - i / n for i in ranks], label=r.name, **style
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1)
    for q in (0.01, 0.001):
        ax.axhline(q, color="grey", linewidth=0.5)
    ax.set_xlabel("latency, ms (log)")
    ax.set_ylabel("share of requests slower (1 - CDF, log)")
    each = f", {scale.subset} servers per client" if scale.subset else ""
    ax.set_title(
        f"{scale.servers:,} servers x {scale.clients} clients{each}, {scale.load:.0%} load"
    )
    ax.legend(loc="lower left")
    path = directory / f"scale_latency{suffix}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        if len(r.received) == 1:
            continue  # a one-server reference: its peak is not a fleet's
        steps = int(scale.duration / r.step)
        times = [i * r.step for i in range(steps)]
        style = {"color": "black", "linestyle": "--"} if r.name == "oracle" else {}
        ax.plot(times, [max(p, 1) for p in r.peaks[:steps]], label=r.name, **style)
    ax.set_yscale("log")
    events = []
    if scale.slow_share:
        events.append((scale.slow_at, "slow"))
    if scale.die_share:
        events += [(scale.die_at, "die"), (scale.return_at, "return")]
    for at, what in events:
        ax.axvline(at, color="grey", linewidth=0.5)
        ax.text(at, ax.get_ylim()[1], f" {what}", va="top", fontsize=8)
    ax.set_xlabel("simulated time, s")
    ax.set_ylabel("most requests outstanding at one server")
    ax.set_title("Where requests pile up (the most at one server, per 0.25 s)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    path = directory / f"scale_herding{suffix}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    written.append(path)
    return written
