"""The upstream health state machine, as one table.

Rule: every change of an upstream's health goes through ``transition()``. A pair
(state, event) that is not in the table leaves the state as it is: for example a
passive ejection of an upstream that an active check already holds down, or a
check result for an upstream that is draining.

    HEALTHY --eject--> EJECTED --expire / check_pass--> HEALTHY
    HEALTHY / EJECTED --check_down--> DOWN --check_up--> HEALTHY
    any of them --drain--> DRAINING          (never back: removal follows)

Slow start is not a state: it is the first seconds of HEALTHY after admission.
"""

from __future__ import annotations

import enum


class Health(enum.Enum):
    """An upstream's health; only HEALTHY members are picked (outside panic)."""

    HEALTHY = "healthy"
    EJECTED = "ejected"
    DOWN = "down"
    DRAINING = "draining"


class Event(enum.Enum):
    """What can happen to an upstream's health."""

    EJECT = "eject"  # passive outlier detection decided to eject
    EXPIRE = "expire"  # the ejection time is over
    CHECK_PASS = "check_pass"  # one active check passed
    CHECK_DOWN = "check_down"  # active checks failed `fall` times in a row
    CHECK_UP = "check_up"  # active checks passed `rise` times in a row
    DRAIN = "drain"


_TABLE: dict[tuple[Health, Event], Health] = {
    (Health.HEALTHY, Event.EJECT): Health.EJECTED,
    (Health.HEALTHY, Event.CHECK_DOWN): Health.DOWN,
    (Health.HEALTHY, Event.DRAIN): Health.DRAINING,
    (Health.EJECTED, Event.EXPIRE): Health.HEALTHY,
    (Health.EJECTED, Event.CHECK_PASS): Health.HEALTHY,
    (Health.EJECTED, Event.CHECK_UP): Health.HEALTHY,
    (Health.EJECTED, Event.CHECK_DOWN): Health.DOWN,
    (Health.EJECTED, Event.DRAIN): Health.DRAINING,
    (Health.DOWN, Event.CHECK_UP): Health.HEALTHY,
    (Health.DOWN, Event.DRAIN): Health.DRAINING,
}


def transition(state: Health, event: Event) -> Health:
    """The state after ``event``; unchanged when the table has no entry."""
    return _TABLE.get((state, event), state)
