"""Fixtures of the transport tests.

Async tests run under asyncio and trio (``anyio_backend``). Tests that take the
``flavour`` fixture run three times: the sync transport, then the async one under
asyncio and under trio; they are written once, against ``_support.Flavour``.
"""

from __future__ import annotations

import pytest

from ._support import Flavour

FLAVOURS = [("sync", "asyncio"), ("async", "asyncio"), ("async", "trio")]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "flavour_name" in metafunc.fixturenames:
        metafunc.parametrize(
            ("flavour_name", "anyio_backend"), FLAVOURS, ids=["sync", "asyncio", "trio"]
        )


@pytest.fixture
def flavour(flavour_name: str) -> Flavour:
    """The sync or the async transport, behind one awaitable API."""
    return Flavour(flavour_name)
