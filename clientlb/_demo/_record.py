"""What the demo's clients saw: every answer (which replica, how long), every
error, by phase, and the recent window behind the live view's percentiles."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ``values`` (sorted here), if any."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class PhaseLog:
    """The answers of one phase: count by replica, first and last answer times."""

    served: Counter[str]
    first: dict[str, float]
    last: dict[str, float]
    errors: int = 0
    slowest: float = 0.0
    retried: int = 0  # answers that took more than one attempt
    first_retry: float | None = None  # when the first of them was sent
    last_retry: float | None = None  # when the last of them was answered


class Recorder:
    """Client-side record of the story; ``window`` seconds of answers stay recent."""

    def __init__(self, phases: int, window: float) -> None:
        self.window = window
        self.phase = 0
        self.phases = [PhaseLog(Counter(), {}, {}) for _ in range(phases)]
        self.recent: deque[tuple[float, str | None, float]] = deque()
        self.latencies: list[float] = []
        self.served: Counter[str] = Counter()
        self.errors = 0

    def answer(self, name: str, latency: float, attempts: int = 1) -> None:
        now = time.monotonic()
        log = self.phases[self.phase]
        if attempts > 1:
            log.retried += 1
            if log.first_retry is None:
                log.first_retry = now - latency
            log.last_retry = now
        log.served[name] += 1
        log.first.setdefault(name, now)
        log.last[name] = now
        log.slowest = max(log.slowest, latency)
        self.served[name] += 1
        self.latencies.append(latency)
        self.recent.append((now, name, latency))

    def error(self) -> None:
        self.errors += 1
        self.phases[self.phase].errors += 1
        self.recent.append((time.monotonic(), None, 0.0))

    def window_view(self) -> tuple[dict[str, list[float]], int, float]:
        """Latencies by replica, errors, and the span they cover, over the window."""
        now = time.monotonic()
        while self.recent and self.recent[0][0] < now - self.window:
            self.recent.popleft()
        by_name: dict[str, list[float]] = {}
        errors = 0
        for _, name, latency in self.recent:
            if name is None:
                errors += 1
            else:
                by_name.setdefault(name, []).append(latency)
        span = min(self.window, now - self.recent[0][0]) if self.recent else self.window
        return by_name, errors, max(span, 1e-3)

    def first_answer(self, names: Sequence[str], phases: range) -> float | None:
        """When the first of ``names`` first answered in ``phases``."""
        times = [
            self.phases[p].first[n] for p in phases for n in names if n in self.phases[p].first
        ]
        return min(times, default=None)

    def last_answer(self, names: Sequence[str], phases: range) -> float | None:
        """When the last of ``names`` last answered in ``phases``."""
        logs = [self.phases[p] for p in phases]
        times = [log.last[n] for log in logs for n in names if n in log.last]
        return max(times, default=None)
