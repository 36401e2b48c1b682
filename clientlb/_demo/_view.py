"""Where the story is told: a live rich view in a terminal, plain lines elsewhere.

``rich`` is an optional extra (``clientlb[rich]``); without it, or when stdout is
not a terminal (a pipe, a log, a test), the story is told in plain periodic
lines, and each phase ends with its table.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, TextIO

from ._story import PHASES, Frame, Phase, Row, Summary

#: Colours of the upstream states in the live view.
STATE_STYLES = {
    "healthy": "green",
    "slow-start": "yellow",
    "recovering": "cyan",
    "ejected": "bold red",
    "down": "bold red",
    "draining": "magenta",
}
COLUMNS = ("upstream", "tier", "state", "in flight", "requests", "share", "p50", "p99", "EWMA")


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _bare(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def cells(row: Row) -> list[str]:
    """A row's cells, in ``COLUMNS`` order (share and percentiles: the last second)."""
    return [
        row.name,
        row.tier,
        row.state,
        str(row.in_flight),
        str(row.requests),
        share(row.share),
        ms(row.p50),
        ms(row.p99),
        ms(row.ewma),
    ]


def table_lines(headers: tuple[str, ...], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """A plain-text table: the first column to the left, the others to the right."""
    widths = [max(len(r[i]) for r in [list(headers), *rows]) for i in range(len(headers))]

    def line(cols: list[str]) -> str:
        first = cols[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(cols[1:], widths[1:], strict=True))
        return f"{indent}{first}  {rest}"

    return [line(list(headers)), *map(line, rows)]


class PlainView:
    """Plain lines: announcements, events, a short line every ``every`` seconds, and
    each phase's last frame as a table."""

    def __init__(self, every: float, out: TextIO | None = None) -> None:
        self.every = every
        self.out = out or sys.stdout
        self.last: Frame | None = None
        self.next_line = every

    def _print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def begin(self, intro: list[str]) -> None:
        for line in intro:
            self._print(line)

    def announce(self, number: int, phase: Phase, at: float) -> None:
        if self.last is not None:
            self._table(number - 1)
        self._print()
        self._print(
            f"[{at:5.1f}s] phase {number + 1}/{len(PHASES)}: {phase.title}: {phase.happens}"
        )
        self._print(f"         watch: {phase.watch}")

    def event(self, at: float, text: str) -> None:
        self._print(f"[{at:5.1f}s]   {text}")

    def frame(self, frame: Frame, final: bool) -> None:
        self.last = frame
        if final:
            self._table(frame.phase)
        elif frame.elapsed >= self.next_line:
            self.next_line = frame.elapsed + self.every
            parts = [
                f"{r.name} {share(r.share)} {_bare(r.p50)}/{_bare(r.p99)} ms"
                if r.state == "healthy"
                else f"{r.name} {r.state.upper()}"
                for r in frame.rows
            ]
            tail = f"{frame.rate:.0f} req/s, errors {frame.errors}"
            self._print(f"[{frame.elapsed:5.1f}s]   " + " | ".join([*parts, tail]))

    def _table(self, phase: int) -> None:
        frame = self.last
        assert frame is not None
        self._print(f"  end of phase {phase + 1} (share, p50, p99: the last second):")
        for line in table_lines(COLUMNS, [cells(r) for r in frame.rows], "    "):
            self._print(line)

    def end(self) -> None:
        pass


class QuietView:
    """Tells nothing (``--compare`` runs the story once per algorithm)."""

    def begin(self, intro: list[str]) -> None:
        pass

    def announce(self, number: int, phase: Phase, at: float) -> None:
        pass

    def event(self, at: float, text: str) -> None:
        pass

    def frame(self, frame: Frame, final: bool) -> None:
        pass

    def end(self) -> None:
        pass


class RichView:
    """A live table redrawn every frame, with the story's progress above it;
    announcements and events scroll above the live area."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.live = Live(console=self.console, auto_refresh=False)
        self.phase = PHASES[0]

    def begin(self, intro: list[str]) -> None:
        for line in intro:
            self.console.print(line, highlight=False)
        self.live.start()

    def announce(self, number: int, phase: Phase, at: float) -> None:
        self.phase = phase
        self.console.print()
        self.console.print(
            f"[dim]{at:5.1f}s[/] [bold]phase {number + 1}/{len(PHASES)}: "
            f"[cyan]{phase.title}[/][/]: {phase.happens}",
            highlight=False,
        )
        self.console.print(f"       [bold]watch:[/] {phase.watch}", highlight=False)

    def event(self, at: float, text: str) -> None:
        name, _, state = text.partition(": ")
        style = STATE_STYLES.get(state, "")
        self.console.print(f"[dim]{at:5.1f}s[/]   {name}: [{style}]{state}[/]", highlight=False)

    def frame(self, frame: Frame, final: bool) -> None:
        self.live.update(self._render(frame), refresh=True)

    def _render(self, frame: Frame) -> Any:
        from rich import box
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for i, column in enumerate(COLUMNS):
            table.add_column(column, justify="left" if i < 3 else "right")
        for row in frame.rows:
            values = cells(row)
            values[2] = f"[{STATE_STYLES.get(row.state, '')}]{row.state}[/]"
            table.add_row(*values, style="dim" if row.requests == 0 else "")
        number = frame.phase + 1
        title = Text.assemble(
            (f"phase {number}/{len(PHASES)} ", "bold"), (PHASES[frame.phase].title, "bold cyan")
        )
        head = Table.grid(padding=(0, 2))
        head.add_row(
            title,
            ProgressBar(total=frame.total, completed=frame.elapsed, width=40),
            f"{frame.elapsed:4.1f} s of {frame.total:g} s",
        )
        errors = "green" if frame.errors == 0 else "bold red"
        foot = Text.assemble(
            f"{frame.rate:.0f} requests/s   client-visible errors: ",
            (str(frame.errors), errors),
            "   (share, p50, p99: the last second)",
        )
        watch = Text(f"watch: {PHASES[frame.phase].watch}", style="dim")
        return Group(head, watch, table, foot)

    def end(self) -> None:
        self.live.stop()


def choose_view(duration: float, out: TextIO | None = None) -> PlainView | RichView:
    """The live view in a terminal when rich is installed, plain lines otherwise."""
    stream = out or sys.stdout
    if stream.isatty() and importlib.util.find_spec("rich") is not None:
        return RichView()
    return PlainView(every=max(0.5, duration / len(PHASES) / 4), out=stream)


def summary_lines(summary: Summary) -> list[str]:
    """The story's summary: per upstream, then what the clients saw."""
    rows = [
        [
            r["name"],
            r["tier"],
            str(r["requests"]),
            share(r["share"]),
            str(r["failures"]),
            str(r["ejections"]),
        ]
        for r in summary.rows
    ]
    headers = ("upstream", "tier", "requests", "share", "failures", "ejections")
    lines = [
        f"Summary: {summary.algorithm}, {summary.duration:g} s, {summary.answers} answers, "
        f"p50 {ms(summary.p50)}, p99 {ms(summary.p99)}",
        *table_lines(headers, rows),
        f"  client-visible errors: {summary.errors}",
    ]
    lines.append(
        f"  crash: {_retries(summary.crash_retried, summary.crash_window)} past primary-1's "
        "refused connections"
    )
    lines.append(
        f"  failover: {_retries(summary.failover_retried, summary.failover_window)} past the "
        "stopped primaries to the standby, then each went straight to it; "
        f"slowest request {ms(summary.failover_slowest)}"
    )
    if summary.fail_back is None:
        lines.append("  fail-back: no primary answered again before the story ended")
    else:
        last = summary.standby_last
        idle = "" if last is None else f", the standby's last answer {last:.2f} s after"
        lines.append(
            f"  fail-back: a primary answered {summary.fail_back:.2f} s after the primaries "
            f"listened again{idle}"
        )
    return lines


def _retries(count: int, window: float | None) -> str:
    if not count or window is None:
        return "no request was retried"
    noun = "request was" if count == 1 else "requests were"
    return f"{count} {noun} retried within {ms(window)}"
