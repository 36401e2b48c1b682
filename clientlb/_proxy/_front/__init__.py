"""The front end of ``clientlb proxy``: its own HTTP/1.1 server, so that every
client limit holds (request line, header line and head sizes; header, body,
keep-alive and send timeouts; a cap on connections), whatever server a user
would otherwise pick. ``ProxyApp`` stays a plain ASGI app for users who mount
it; here it is driven through the same ASGI calls."""

from __future__ import annotations

import logging

from .._limits import Limits
from ._server import FrontEnd

__all__ = ["FrontEnd", "raise_fd_limit"]

log = logging.getLogger("clientlb.proxy")


def raise_fd_limit(limits: Limits) -> None:
    """Raise the soft open-files limit to the hard one (as nginx's
    ``worker_rlimit_nofile`` and HAProxy do), and warn when it is still too low
    for ``client_connections`` clients each with an upstream connection."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    needed = 2 * limits.client_connections + 64
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open files limit %d is low for %d client connections (about %d needed)",
            soft,
            limits.client_connections,
            needed,
        )
