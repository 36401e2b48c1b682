from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clientlb import Pool
from clientlb._proxy import ProxyApp

from .servers import Served, Special


@pytest.fixture
def special() -> Iterator[tuple[Special, Served]]:
    """The special-behaviour upstream, served."""
    app = Special()
    with Served(app) as served:
        yield app, served


@pytest.fixture
def proxy() -> Iterator[Callable[..., tuple[ProxyApp, Served]]]:
    """Start ``ProxyApp(*args, **kwargs)`` under uvicorn; stopped after the test."""
    started: list[Served] = []

    def start(*args: Any, **kwargs: Any) -> tuple[ProxyApp, Served]:
        app = ProxyApp(*args, **kwargs)
        served = Served(app, lifespan="on").start()
        started.append(served)
        return app, served

    yield start
    for served in started:
        served.stop()


def in_flight(pool: Pool) -> int:
    return sum(up["in_flight"] for up in pool.snapshot()["upstreams"])
