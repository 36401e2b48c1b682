"""Decision records as OpenTelemetry span attributes.

With ``opentelemetry-api`` installed (the ``otel`` extra) and a span recording
around the request (the caller's, or the server's in a proxy), each request
annotates it: where it went, why, and what each attempt did. Without the
package, or without a recording span, it costs a check or two per request
(one look at the current context when nothing is in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from ._core import Attempt, Decision

_trace: Any
_current_context: Any


def _context_reader() -> Any:
    """``opentelemetry.context.get_current``; or, with its default runtime
    context (the current context in a ``ContextVar``), that variable's ``get``:
    the same reading in one C call, without two Python frames per request."""
    from opentelemetry import context
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    runtime = getattr(context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        return variable.get
    return context.get_current


try:
    from opentelemetry import trace as _trace
except ImportError:  # the optional extra is not installed
    _trace = _current_context = None
else:
    _current_context = _context_reader()

_OUTCOMES = "clientlb.attempt_outcomes"


def annotate(decision: Decision | None, attempts: Sequence[Attempt]) -> None:
    """Set the decision's attributes on the current span, if one records."""
    if _trace is None or decision is None:
        return
    context = _current_context()
    if not context:  # an empty context holds no span: one call, without a span
        return
    span: Any = _trace.get_current_span(context)
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "clientlb.upstream": decision.upstream,
            "clientlb.reason": decision.reason,
            "clientlb.algorithm": decision.algorithm,
            "clientlb.tier": decision.tier,
            "clientlb.attempts": len(attempts),
            _OUTCOMES: [
                f"{a.upstream} {a.status if a.status is not None else a.outcome}" for a in attempts
            ],
        }
    )
