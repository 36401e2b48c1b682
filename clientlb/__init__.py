"""clientlb: a load balancer inside the caller.

Public names only; the code lives in the private modules.
"""

import logging as _logging

from . import discovery as discovery
from . import testing as testing
from ._admin import (
    admin_app as admin_app,
)
from ._core import (
    ALGORITHMS as ALGORITHMS,
)
from ._core import (
    Algorithm as Algorithm,
)
from ._core import (
    Attempt as Attempt,
)
from ._core import (
    Candidate as Candidate,
)
from ._core import (
    Decision as Decision,
)
from ._core import (
    Health as Health,
)
from ._core import (
    HealthCheck as HealthCheck,
)
from ._core import (
    Lease as Lease,
)
from ._core import (
    MemberState as MemberState,
)
from ._core import (
    Outcome as Outcome,
)
from ._core import (
    OutlierDetection as OutlierDetection,
)
from ._core import (
    Pool as Pool,
)
from ._core import (
    RetryBudget as RetryBudget,
)
from ._core import (
    RetryPolicy as RetryPolicy,
)
from ._core import (
    StickyCookie as StickyCookie,
)
from ._core import (
    Subset as Subset,
)
from ._core import (
    Upstream as Upstream,
)
from ._exceptions import (
    ConfigError as ConfigError,
)
from ._exceptions import (
    NoUpstreamAvailable as NoUpstreamAvailable,
)
from ._exceptions import (
    UnknownService as UnknownService,
)
from ._metrics import (
    Metrics as Metrics,
)
from ._proxy import (
    Limits as Limits,
)
from ._proxy import (
    ProxyApp as ProxyApp,
)
from ._proxy import (
    ProxyMiddleware as ProxyMiddleware,
)
from ._proxy import (
    WebSocketSettings as WebSocketSettings,
)
from ._proxy import (
    WSGIProxy as WSGIProxy,
)
from ._proxy import (
    WSGIProxyMiddleware as WSGIProxyMiddleware,
)
from ._transports import (
    AsyncBalancingTransport as AsyncBalancingTransport,
)
from ._transports import (
    BalancingTransport as BalancingTransport,
)

__version__ = "0.1.0"

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
    "Limits",
    "MemberState",
    "Metrics",
    "NoUpstreamAvailable",
    "Outcome",
    "OutlierDetection",
    "Pool",
    "ProxyApp",
    "ProxyMiddleware",
    "RetryBudget",
    "RetryPolicy",
    "StickyCookie",
    "Subset",
    "UnknownService",
    "Upstream",
    "WSGIProxy",
    "WSGIProxyMiddleware",
    "WebSocketSettings",
    "__version__",
    "admin_app",
    "discovery",
    "testing",
]

# A library's records go where the application's logging sends them, and
# nowhere when it configured none (not to stderr through logging's last resort).
_logging.getLogger("clientlb").addHandler(_logging.NullHandler())
