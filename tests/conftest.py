from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

import clientlb
from clientlb._proxy._serve import compiled

from . import library
from .certs import Certs
from .replicas import Replica


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--library",
        choices=library.NAMES,
        default="httpx",
        help="the client library tests/transports run on (httpx2: clientlb.httpx2)",
    )


def pytest_configure(config: pytest.Config) -> None:
    library.use(config.getoption("library"))
    if os.environ.get("CLIENTLB_EXPECT_COMPILED") and not compiled():
        # the run meant for the compiled build would test the sources again
        raise pytest.UsageError(f"CLIENTLB_EXPECT_COMPILED, but clientlb is {clientlb.__file__}")


def pytest_report_header(config: pytest.Config) -> str:
    build = "compiled" if compiled() else "interpreted"
    return f"transport tests on: {config.getoption('library')}; clientlb {build}"


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


#: Fixtures that run a real server (replicas, dnsmasq, etcd): a test using one is
#: an integration test whether or not its module says so.
SERVER_FIXTURES = frozenset({"replicas", "standby", "dnsmasq", "etcd"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def servers_only_in_integration_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that opens a listening socket must be marked ``integration``, so
    ``-m "not integration"`` is the server-free part of the suite."""
    if request.node.get_closest_marker("integration") is not None:
        return

    def refuse(sock: socket.socket, *args: object) -> None:
        raise AssertionError(f"{request.node.nodeid} runs a server: mark it integration")

    monkeypatch.setattr(socket.socket, "listen", refuse)
