"""clientlb: a load balancer inside the caller.

Public names only; the code lives in the private modules.
"""

from ._core import (
    ALGORITHMS as ALGORITHMS,
    Algorithm as Algorithm,
    Attempt as Attempt,
    Health as Health,
    Lease as Lease,
    Outcome as Outcome,
    OutlierDetection as OutlierDetection,
    Pool as Pool,
    RetryBudget as RetryBudget,
    RetryPolicy as RetryPolicy,
    Upstream as Upstream,
)
from ._exceptions import (
    ConfigError as ConfigError,
    NoUpstreamAvailable as NoUpstreamAvailable,
    UnknownService as UnknownService,
)

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Attempt",
    "ConfigError",
    "Health",
    "Lease",
    "NoUpstreamAvailable",
    "Outcome",
    "OutlierDetection",
    "Pool",
    "RetryBudget",
    "RetryPolicy",
    "UnknownService",
    "Upstream",
    "__version__",
]
