from __future__ import annotations

from collections.abc import Iterator

import pytest

from .certs import Certs
from .replicas import Replica


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    """Three fast replicas, started, stopped after the test."""
    started = [Replica(f"r{i}").start() for i in range(3)]
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def standby() -> Iterator[Replica]:
    replica = Replica("standby").start()
    yield replica
    replica.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A test CA and a server certificate for 127.0.0.1 (files, made once)."""
    return Certs(tmp_path_factory.mktemp("certs"))
