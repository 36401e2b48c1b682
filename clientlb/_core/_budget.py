"""The retry budget: retries allowed as a share of recent requests."""

from __future__ import annotations

import math

from ._policies import RetryBudget


class BudgetLedger:
    """Counts requests and retries in one-second slots over the budget's window.

    A retry is allowed while ``retries < min_per_second * window + ratio * requests``
    over the window, so that retries add at most ``ratio`` to the load a failing
    service sees, however many callers retry at once.
    """

    __slots__ = ("budget", "requests", "retries", "second", "slots")

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget
        self.slots = max(1, math.ceil(budget.window))
        self.requests = [0] * self.slots
        self.retries = [0] * self.slots
        self.second = 0

    def _advance(self, now: float) -> int:
        second = int(now)
        gap = second - self.second
        if gap > 0:
            for step in range(1, min(gap, self.slots) + 1):
                i = (self.second + step) % self.slots
                self.requests[i] = 0
                self.retries[i] = 0
            self.second = second
        return second % self.slots

    def request(self, now: float) -> None:
        second = int(now)
        if second == self.second:  # _advance() has nothing to do: once per request
            self.requests[second % self.slots] += 1
        else:
            self.requests[self._advance(now)] += 1

    def has_retry(self, now: float) -> bool:
        """Whether one retry is left, without taking it."""
        self._advance(now)
        budget = self.budget
        allowed = budget.min_per_second * budget.window + budget.ratio * sum(self.requests)
        return sum(self.retries) + 1 <= allowed

    def try_retry(self, now: float) -> bool:
        """Take one retry from the budget, if any is left."""
        if not self.has_retry(now):
            return False
        self.retries[self._advance(now)] += 1
        return True
