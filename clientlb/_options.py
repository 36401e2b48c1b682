"""The pool options every shell takes, the same way.

The transports, ``ProxyApp``, ``ProxyMiddleware``, ``WSGIProxy`` and
``WSGIProxyMiddleware`` accept ``algorithm``, ``retry``, ``outlier``,
``slow_start``, ``fail_back_after``, ``health_check``, ``discovery``,
``max_connections``, ``max_pending`` and ``subset`` as typed
keyword arguments and hand them to the ``Pool`` they build; each default is
``Pool``'s own, defined there once (an argument left out is ``UNSET``, not a
second copy of the default). Given beside a ``Pool`` of yours they would be
silently dropped or would silently override it, so that is a ``ConfigError``:
give them to the ``Pool``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from ._core import Algorithm, ConfigError, Pool, Upstream


class Unset(enum.Enum):
    """An argument left out (its default is the ``Pool``'s)."""

    UNSET = "unset"


UNSET = Unset.UNSET
PoolSource: TypeAlias = Pool | Iterable[str | Upstream]


def given(**options: Any) -> dict[str, Any]:
    """The pool options a caller gave (those not ``UNSET``)."""
    return {name: value for name, value in options.items() if value is not UNSET}


def as_pool(
    source: PoolSource,
    standbys: Iterable[str | Upstream],
    options: Mapping[str, Any],
    field: str = "upstreams",
) -> Pool:
    """``source`` itself if it is a ``Pool`` (nothing else may be given with it),
    else a ``Pool`` of its URLs with ``standbys`` and ``options``."""
    if isinstance(source, Pool):
        if options:
            name = next(iter(options))
            raise ConfigError(name, "give it to the Pool, not beside a Pool")
        if not isinstance(standbys, Iterable) or tuple(standbys):
            raise ConfigError("standbys", "give them to the Pool, not beside a Pool")
        return source
    if isinstance(source, str | Upstream):
        raise ConfigError(field, f"expected a list of URLs, got the single value {source!r}")
    if not isinstance(source, Iterable):
        raise ConfigError(field, f"expected a list of URLs or a Pool, got {source!r}")
    return Pool(source, standbys, **options)


AlgorithmOption: TypeAlias = str | Algorithm | Unset
