"""The checks on ``Pool``'s arguments: each bad value is a ``ConfigError`` that
names it, raised when the pool is built."""

from __future__ import annotations

import random as _random
from collections.abc import Iterable, Mapping
from typing import Any

from ._errors import ConfigError
from ._policies import HealthCheck, OutlierDetection, RetryPolicy, _positive, flag, seconds
from ._upstream import MAX_CONNECTIONS, Upstream, connection_limit


def check_pool_options(
    *,
    upstreams: object,
    standbys: object,
    outlier: object,
    retry: object,
    slow_start: float,
    slow_start_min_share: float,
    fail_back_after: float,
    failure_penalty: float,
    panic_threshold: float,
    health_check: object,
    max_connections: object,
    max_pending: object,
    allow_empty: bool,
    clock: object,
    rng: object,
) -> None:
    """Raise ``ConfigError`` for the first bad argument."""
    for name, values in (("upstreams", upstreams), ("standbys", standbys)):
        if isinstance(values, str | bytes | Upstream) or not isinstance(values, Iterable):
            raise ConfigError(name, f"expected a list of URLs, got {values!r}")
    seconds("slow_start", slow_start, zero_ok=True)
    _positive("slow_start_min_share", slow_start_min_share)
    seconds("fail_back_after", fail_back_after, zero_ok=True)
    seconds("failure_penalty", failure_penalty, zero_ok=True)
    _positive("panic_threshold", panic_threshold, zero_ok=True)
    if panic_threshold > 1:
        raise ConfigError("panic_threshold", f"must be <= 1, got {panic_threshold!r}")
    connection_limit("max_connections", max_connections)
    if (
        isinstance(max_pending, bool)
        or not isinstance(max_pending, int)
        or not 0 <= max_pending <= MAX_CONNECTIONS
    ):
        raise ConfigError(
            "max_pending",
            f"must be a whole number from 0 to {MAX_CONNECTIONS}, got {max_pending!r}",
        )
    flag("allow_empty", allow_empty)
    if outlier is not None and not isinstance(outlier, OutlierDetection):
        raise ConfigError("outlier", f"expected OutlierDetection or None, got {outlier!r}")
    if not callable(clock):
        raise ConfigError("clock", f"expected a callable returning seconds, got {clock!r}")
    if rng is not None and not isinstance(rng, _random.Random):
        raise ConfigError("rng", f"expected random.Random or None, got {rng!r}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigError("retry", f"expected RetryPolicy, got {retry!r}")
    if health_check is not None and not isinstance(health_check, HealthCheck):
        raise ConfigError("health_check", f"expected HealthCheck or None, got {health_check!r}")


def discovery_providers(discovery: Any) -> Any:
    """``discovery`` checked: a ``clientlb.discovery`` provider (duck-typed), a
    tuple of them, or ``None``."""

    def provider(value: object) -> bool:
        return callable(getattr(value, "run", None)) and callable(getattr(value, "arun", None))

    if discovery is None or provider(discovery):
        return discovery
    if isinstance(discovery, str | bytes | Mapping) or not isinstance(discovery, Iterable):
        raise ConfigError("discovery", f"expected a discovery provider, got {discovery!r}")
    discovery = tuple(discovery)  # an iterator would be spent by the first owner
    for value in discovery:
        if not provider(value):
            raise ConfigError("discovery", f"expected a discovery provider, got {value!r}")
    return discovery
