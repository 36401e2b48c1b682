"""One log line for everything that happens to a pool.

Every state change of an upstream (ejected, re-admitted, down and up by the
active checks, slow start, draining, removed) and every change of who serves
(failover to the standbys, fail-back to the primaries, panic, nothing left) is a
record on the ``clientlb.events`` logger, a child of ``clientlb``: an operator
who configures ``logging.getLogger("clientlb")`` sees them all, with discovery's
(``clientlb.discovery``) and the proxy's (``clientlb.proxy``, ``clientlb.access``).

Trouble is a warning (ejected, down, failover, panic, nothing can serve), the
way back is information. Each record carries ``clientlb_event`` (the event's
name), ``upstream`` and ``tier`` as attributes, for structured handlers.

The transports and proxies call ``log_events(pool)`` for the pools they use:
once per pool, however many owners share it.
"""

from __future__ import annotations

import logging
import threading
import weakref

from ._core import Health, Member, Pool

log = logging.getLogger("clientlb.events")

_TIERS = ("primary", "standby")
_OUT = {Health.EJECTED.value, Health.DOWN.value}
_STATE_EVENTS = {h.value for h in Health} | {"removed"}
_lock = threading.Lock()
_logged: weakref.WeakSet[Pool] = weakref.WeakSet()


def log_events(pool: Pool) -> None:
    """Log ``pool``'s events from now on (a second call for the same pool does
    nothing)."""
    with _lock:
        if pool in _logged:
            return
        _logged.add(pool)
    states = {m.upstream.key: m.health.value for m in pool._live_members()}

    def on_member(event: str, member: Member) -> None:
        if event not in _STATE_EVENTS:
            return  # not a change of state (a check's result, for the metrics)
        upstream = member.upstream
        before = states.pop(upstream.key, None)
        if event != "removed":
            states[upstream.key] = event
        line, level = _member_line(event, before, member, pool)
        if log.isEnabledFor(level):
            extra = {"clientlb_event": event, "upstream": upstream.url, "tier": _TIERS[member.tier]}
            log.log(level, "%s (%s): %s", upstream.url, _TIERS[member.tier], line, extra=extra)

    def on_serving(before: str, now: str) -> None:
        line, level = _serving_line(before, now)
        log.log(level, "%s", line, extra={"clientlb_event": now, "upstream": None, "tier": None})

    pool._watch(on_member)
    pool._watch_serving(on_serving)


def _member_line(event: str, before: str | None, member: Member, pool: Pool) -> tuple[str, int]:
    if event == Health.EJECTED.value:
        why = "its connections are refused" if member.refused else "it failed too often in a row"
        seconds = max(0.0, member.ejected_until - pool.clock())
        probing = "; probing it" if member.probe_at != float("inf") else ""
        return f"ejected for {seconds:.0f} s: {why}{probing}", logging.WARNING
    if event == Health.DOWN.value:
        return "down: its health checks fail", logging.WARNING
    if event == "removed":
        return "removed from the pool", logging.INFO
    if event == Health.DRAINING.value:
        return "draining: no new requests, removed when idle", logging.INFO
    back = before in _OUT
    if event == Health.HEALTHY.value:
        return ("re-admitted" if back else "serving at full weight"), logging.INFO
    if event == Health.SLOW_START.value:
        return ("re-admitted, " if back else "") + "ramping up (slow start)", logging.INFO
    if event == Health.RECOVERING.value:
        return "back, held while the standbys keep the traffic (fail_back_after)", logging.INFO
    return event, logging.INFO


def _serving_line(before: str, now: str) -> tuple[str, int]:
    if now == "standby":
        return "failover: no primary can serve, the standbys take the traffic", logging.WARNING
    if now == "primary":
        what = (
            "fail-back: the primaries serve again"
            if before == "standby"
            else (f"the primaries serve again (after {before})")
        )
        return what, logging.INFO
    if now == "panic":
        return (
            "panic: no tier can serve on its own; balancing over every upstream not down",
            logging.WARNING,
        )
    return "nothing can serve: every upstream is down or draining", logging.ERROR
