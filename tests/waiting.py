"""The one way tests wait for state that another thread or task settles."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import pytest

from clientlb import HealthCheck, Pool
from clientlb._background import Background

from .replicas import Replica

T = TypeVar("T")

POLL = 0.005


def wait_for(condition: Callable[[], T], what: str = "", *, timeout: float = 10.0) -> T:
    """Poll ``condition`` until it is truthy and return its value; fail the test
    after ``timeout`` seconds, naming ``what`` it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(POLL)


async def await_for(condition: Callable[[], T], what: str = "", *, timeout: float = 10.0) -> T:
    """``wait_for`` for async tests (any anyio backend)."""
    deadline = anyio.current_time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if anyio.current_time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        await anyio.sleep(POLL)


def never(condition: Callable[[], Any], within: float) -> bool:
    """True if ``condition`` stays false for ``within`` seconds: for the rare
    claim that something does *not* happen, where no event can say so."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return False
        time.sleep(POLL)
    return not condition()


class CheckClock:
    """A replica health-checked by a pool of its own: its checks count time in
    check intervals, so a test can show that some other checks *stopped*
    (their count holds while this one's grows) without a fixed sleep."""

    def __init__(self, replica: Replica, check: HealthCheck) -> None:
        self.replica = replica
        self._background = Background(Pool([replica.url]), health_check=check)

    def _checks(self) -> int:
        return self.replica.count(path="/health")

    def wait(self, intervals: int) -> None:
        """Return once ``intervals`` more checks reached the replica."""
        target = self._checks() + intervals
        wait_for(lambda: self._checks() >= target, f"{intervals} check intervals")

    def __enter__(self) -> CheckClock:
        self.replica.start()
        self._background.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._background.close()
        self.replica.stop()


def assert_stopped(count: Callable[[], int], clock: CheckClock) -> None:
    """``count`` (of checks some closed owner sent) no longer grows: any check
    already on the wire lands within two intervals, then four more pass."""
    clock.wait(2)
    before = count()
    clock.wait(4)
    assert count() == before, "checks went on after close"
