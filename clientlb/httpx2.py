"""clientlb for httpx2 clients: the same transports, on httpx2.

httpx2 is the maintained fork of httpx (from 0.28.1), with httpx's API under
its own names. Its clients accept the transports here, which answer with
``httpx2.Response`` objects and raise httpx2's errors: ``NoUpstreamAvailable``
and ``UnknownService`` here are ``httpx2.TransportError`` (not httpx's), and a
call that ends on an attempt's error raises that error's httpx2 class too::

    import httpx2
    from clientlb.httpx2 import BalancingTransport

    transport = BalancingTransport(["http://10.0.0.1:8000", "http://10.0.0.2:8000"])
    with httpx2.Client(transport=transport, base_url="http://users") as client:
        client.get("/users/1")

The transports are ``clientlb.BalancingTransport`` and
``clientlb.AsyncBalancingTransport``, the same code on another library (see
their parameters): ``inner=`` and ``fallback=`` take httpx2 transports, a
``hash_on=`` callable takes the ``httpx2.Request``, and the active health checks
go through ``inner=`` or an ``httpx2.HTTPTransport`` of their own. Discovery
(etcd) keeps its own httpx client, as httpx stays clientlb's dependency.
Everything that does not depend on the client library (``Pool``, the policies,
``Metrics``...) is clientlb's own, re-exported here; a ``Pool`` may be shared by
transports of both libraries in one process.

Needs httpx2 (``pip install clientlb[httpx2]``).
"""

from __future__ import annotations

try:
    import httpx2
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "clientlb.httpx2 needs httpx2: pip install 'clientlb[httpx2]' (or httpx2)"
    ) from exc

from ._core import ALGORITHMS as ALGORITHMS
from ._core import Algorithm as Algorithm
from ._core import Attempt as Attempt
from ._core import Candidate as Candidate
from ._core import Decision as Decision
from ._core import Health as Health
from ._core import HealthCheck as HealthCheck
from ._core import Lease as Lease
from ._core import MemberState as MemberState
from ._core import Outcome as Outcome
from ._core import OutlierDetection as OutlierDetection
from ._core import Pool as Pool
from ._core import RetryBudget as RetryBudget
from ._core import RetryPolicy as RetryPolicy
from ._core import StickyCookie as StickyCookie
from ._core import Upstream as Upstream
from ._exceptions import CallFailed
from ._exceptions import ConfigError as ConfigError
from ._library import Library
from ._metrics import Metrics as Metrics
from ._transports import AsyncShell, SyncShell


class NoUpstreamAvailable(CallFailed, httpx2.TransportError):
    """``clientlb.NoUpstreamAvailable`` as an ``httpx2.TransportError``."""


class UnknownService(httpx2.TransportError):
    """``clientlb.UnknownService`` as an ``httpx2.TransportError``."""


HTTPX2 = Library(httpx2, NoUpstreamAvailable, UnknownService)


# The shells are typed against httpx's classes, which httpx2's mirror: httpx2's
# base classes name their own (the same API), hence the ignores.
class BalancingTransport(  # type: ignore[misc]
    SyncShell[httpx2.BaseTransport, httpx2.Request], httpx2.BaseTransport
):
    """``clientlb.BalancingTransport`` for ``httpx2.Client`` (same parameters;
    by default each upstream gets an ``httpx2.HTTPTransport()``)."""

    _library = HTTPX2


class AsyncBalancingTransport(  # type: ignore[misc]
    AsyncShell[httpx2.AsyncBaseTransport, httpx2.Request], httpx2.AsyncBaseTransport
):
    """``clientlb.AsyncBalancingTransport`` for ``httpx2.AsyncClient`` (same
    parameters; by default each upstream gets an ``httpx2.AsyncHTTPTransport()``)."""

    _library = HTTPX2


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AsyncBalancingTransport",
    "Attempt",
    "BalancingTransport",
    "Candidate",
    "ConfigError",
    "Decision",
    "Health",
    "HealthCheck",
    "Lease",
    "MemberState",
    "Metrics",
    "NoUpstreamAvailable",
    "Outcome",
    "OutlierDetection",
    "Pool",
    "RetryBudget",
    "RetryPolicy",
    "StickyCookie",
    "UnknownService",
    "Upstream",
]
