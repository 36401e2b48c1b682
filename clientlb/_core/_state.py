"""The upstream health state machine, as one table.

Rule 1: every change of an upstream's state goes through ``transition()``. A pair
(state, event) that is not in the table leaves the state as it is: for example a
passive ejection of an upstream that an active check already holds down, or a
check result for an upstream that is draining.

Rule 2: a member that comes back into service (HEALTHY from a state that does not
serve) goes on, in the same change, through ``HOLD`` when the fail-back hold
applies or else through ``RAMP`` when slow start is on. Listeners hear one event:
the state it lands in.

Rule 3: each timed state has its own deadline on the member and ends with its own
event (``TIMED``). A drain's deadline ends in removal, a change of membership.

    HEALTHY --ramp--> SLOW_START --ramp_end--> HEALTHY
    HEALTHY --hold--> RECOVERING --hold_end--> HEALTHY        (fail-back hold)
    HEALTHY / SLOW_START / RECOVERING --eject--> EJECTED
    EJECTED --expire / check_pass / check_up / probe_pass--> HEALTHY
    any but DRAINING --check_down--> DOWN --check_up--> HEALTHY
    any of them --drain--> DRAINING          (never back: removal follows)

SERVING members are picked; outside panic no other is. Panic balances over the
PANIC_ELIGIBLE ones: a member held down by active checks is never dialled.
"""

from __future__ import annotations

import enum


class Health(enum.Enum):
    """An upstream's state; its value is the ``state`` of ``Pool.snapshot()``."""

    HEALTHY = "healthy"
    SLOW_START = "slow-start"  # serving, at a share of its weight that grows
    RECOVERING = "recovering"  # back, held while the standbys keep the traffic
    EJECTED = "ejected"  # out by passive outlier detection, for a while
    DOWN = "down"  # out by active health checks, until they pass
    DRAINING = "draining"  # leaving: no new requests, removed when idle


class Event(enum.Enum):
    """What can happen to an upstream's state."""

    EJECT = "eject"  # passive outlier detection decided to eject
    EXPIRE = "expire"  # the ejection time is over
    CHECK_PASS = "check_pass"  # one active check passed
    CHECK_DOWN = "check_down"  # active checks failed `fall` times in a row
    CHECK_UP = "check_up"  # active checks passed `rise` times in a row
    PROBE_PASS = "probe_pass"  # a connect probe of an ejected upstream succeeded
    DRAIN = "drain"
    HOLD = "hold"  # back while only the standbys serve: wait `fail_back_after`
    HOLD_END = "hold_end"  # the fail-back hold is over (or pointless)
    RAMP = "ramp"  # admitted or back under slow start
    RAMP_END = "ramp_end"  # slow start is over


H, E = Health, Event
_LIVE = (H.HEALTHY, H.SLOW_START, H.RECOVERING, H.EJECTED, H.DOWN)

_TABLE: dict[tuple[Health, Event], Health] = {
    (H.HEALTHY, E.RAMP): H.SLOW_START,
    (H.SLOW_START, E.RAMP_END): H.HEALTHY,
    (H.HEALTHY, E.HOLD): H.RECOVERING,
    (H.RECOVERING, E.HOLD_END): H.HEALTHY,
    (H.HEALTHY, E.EJECT): H.EJECTED,
    (H.SLOW_START, E.EJECT): H.EJECTED,
    (H.RECOVERING, E.EJECT): H.EJECTED,  # tried as a last resort, and failed
    (H.EJECTED, E.EXPIRE): H.HEALTHY,
    (H.EJECTED, E.CHECK_PASS): H.HEALTHY,
    (H.EJECTED, E.CHECK_UP): H.HEALTHY,
    (H.EJECTED, E.PROBE_PASS): H.HEALTHY,
    (H.DOWN, E.CHECK_UP): H.HEALTHY,
    **{(state, E.CHECK_DOWN): H.DOWN for state in _LIVE if state is not H.DOWN},
    **{(state, E.DRAIN): H.DRAINING for state in _LIVE},
}

#: The states whose members are picked (outside panic).
SERVING = frozenset({H.HEALTHY, H.SLOW_START})
#: The states whose members panic mode balances over: not DOWN, not DRAINING.
PANIC_ELIGIBLE = frozenset({H.HEALTHY, H.SLOW_START, H.RECOVERING, H.EJECTED})
#: The timed states: the event that ends each when its deadline passes.
TIMED = {
    H.EJECTED: E.EXPIRE,
    H.RECOVERING: E.HOLD_END,
    H.SLOW_START: E.RAMP_END,
}

del H, E


def transition(state: Health, event: Event) -> Health:
    """The state after ``event``; unchanged when the table has no entry."""
    return _TABLE.get((state, event), state)
