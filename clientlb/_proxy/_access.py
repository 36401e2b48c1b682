"""The access log: one line per proxied request, on ``clientlb.access``.

Each line says what the client asked and got, and where the request went and
why, in ``key=value`` form (logfmt, one line, values with spaces quoted)::

    GET /users/1 200 upstream=http://10.0.0.2:8000 reason=balanced
    attempts="http://10.0.0.1:8000 connect_failure, http://10.0.0.2:8000 200"
    duration_ms=3.1 bytes_in=0 bytes_out=512 client=10.1.2.3

The same fields ride on the record as ``clientlb_access`` (a dict), for JSON
formatters. Off unless asked for (``ProxyApp(access_log=True)``, or
``[server] access_log = true`` for ``clientlb proxy``); it works the same
with or without an admin listener.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .._core import Attempt, Decision

access = logging.getLogger("clientlb.access")


def _quoted(value: str) -> str:
    if not value or any(c in value for c in ' "='):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def log_access(
    method: str,
    path: str,
    status: int,
    attempts: Sequence[Attempt],
    decision: Decision | None,
    duration: float,
    bytes_in: int,
    bytes_out: int,
    client: str | None,
) -> None:
    """Write one request's line (``status`` 0: no response was started)."""
    fields: dict[str, Any] = {
        "upstream": attempts[-1].upstream if attempts else "-",
        "reason": decision.reason if decision is not None else "-",
        "attempts": ", ".join(
            f"{a.upstream} {a.status if a.status is not None else a.outcome}" for a in attempts
        ),
        "duration_ms": round(duration * 1000, 1),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "client": client or "-",
    }
    text = " ".join(f"{name}={_quoted(str(value))}" for name, value in fields.items())
    record = {"method": method, "path": path, "status": status, **fields}
    access.info("%s %s %d %s", method, path, status, text, extra={"clientlb_access": record})
