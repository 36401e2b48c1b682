from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from clientlb import Pool

from ..replicas import Replica


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Events:
    """Health changes of a pool, each with how many checks its replica had seen."""

    def __init__(self, pool: Pool, replicas: list[Replica]) -> None:
        self.by_url = {r.url: r for r in replicas}
        self.seen: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        pool.subscribe(self._on)

    def _on(self, event: str, member: object) -> None:
        url = member.upstream.url  # type: ignore[attr-defined]
        replica = self.by_url.get(url)
        checks = replica.count(path="/health") if replica is not None else -1
        with self._lock:
            self.seen.append((event, url, checks))

    def first(self, event: str, url: str, after: int = 0) -> int | None:
        """Checks seen at the first ``event`` of ``url`` (from index ``after``)."""
        with self._lock:
            for e, u, checks in self.seen[after:]:
                if e == event and u == url:
                    return checks
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self.seen)


def background_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("clientlb")]


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    yield
    assert background_threads() == []
