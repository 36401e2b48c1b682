"""The algorithm interface, and what the algorithms share."""

from __future__ import annotations

import copy
import random as _random
from collections.abc import Callable, Container, Sequence
from typing import ClassVar, Self

from .._member import Member


class Algorithm:
    """Base class of the balancing algorithms; subclass it for a custom one."""

    name: ClassVar[str] = "custom"
    #: Uses the request's key (client address, ``hash_on=``) rather than load.
    hashes: ClassVar[bool] = False
    #: Wants ``changed(member)`` after in-flight or latency changes.
    tracks_load: ClassVar[bool] = False
    #: Builds its index apart from the pool's lock (``prepare()``, ``install()``,
    #: ``version``: see ``ConsistentHash``) and picks from the last one meanwhile.
    builds_apart: ClassVar[bool] = False

    rng: _random.Random
    clock: Callable[[], float]

    def bind(self, rng: _random.Random, clock: Callable[[], float]) -> Self:
        """A fresh copy of this algorithm's settings for one tier of one pool."""
        clone = copy.copy(self)
        clone.rng = rng
        clone.clock = clock
        return clone

    def rebuild(self, members: Sequence[Member]) -> None:
        """Take a new candidate list (in configuration order)."""
        raise NotImplementedError

    def pick(self, key: str | None, exclude: Container[Member]) -> Member | None:
        """One candidate not in ``exclude``, or ``None`` if there is none."""
        raise NotImplementedError

    def changed(self, member: Member) -> None:
        """``member``'s in-flight count or latency changed (``tracks_load`` only)."""

    def score_of(self, member: Member) -> float | None:
        """The score this algorithm ranks ``member`` by now (lower first), for a
        decision record; ``None`` for algorithms that rank by no score (turns,
        chance, hashing). Never called on the per-request path."""
        return None


def remaining(members: Sequence[Member], exclude: Container[Member]) -> list[Member]:
    return [m for m in members if m not in exclude]


def load_per_weight(m: Member) -> float:
    return (m.in_flight + 1) / m.weight
