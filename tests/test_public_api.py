"""The public surface: every name in ``__all__`` exists and is documented."""

from __future__ import annotations

import httpx

import clientlb


def test_all_names_exist_and_are_sorted() -> None:
    assert clientlb.__all__ == sorted(clientlb.__all__)
    for name in clientlb.__all__:
        assert hasattr(clientlb, name), name


def test_contract_names() -> None:
    for name in (
        "AsyncBalancingTransport",
        "BalancingTransport",
        "ConfigError",
        "Metrics",
        "NoUpstreamAvailable",
        "Pool",
        "StickyCookie",
        "UnknownService",
        "Upstream",
        "admin_app",
    ):
        assert name in clientlb.__all__


def test_exception_tree() -> None:
    assert issubclass(clientlb.ConfigError, ValueError)
    assert issubclass(clientlb.NoUpstreamAvailable, httpx.TransportError)
    assert issubclass(clientlb.UnknownService, httpx.TransportError)


def test_transports_are_httpx_transports() -> None:
    assert issubclass(clientlb.BalancingTransport, httpx.BaseTransport)
    assert issubclass(clientlb.AsyncBalancingTransport, httpx.AsyncBaseTransport)


def test_algorithm_names() -> None:
    assert set(clientlb.ALGORITHMS) == {
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "least_response_time",
        "ip_hash",
        "random",
        "power_of_two",
        "peak_ewma",
        "consistent_hash",
    }


def test_public_classes_have_docstrings() -> None:
    for name in clientlb.__all__:
        obj = getattr(clientlb, name)
        if isinstance(obj, type):
            assert obj.__doc__, name
