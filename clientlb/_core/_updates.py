"""A new membership, applied in steps: the work of ``Pool.update()`` and
``Pool.update_steps()``.

``check_update()`` validates the lists and builds the new members before the
pool's lock is taken (most of the cost of a large addition); ``apply_in_steps()``
then makes the change under the lock, at most ``step`` members per hold, joining
and staying first and leaving last, so that the pool is never empty between two
steps. Each member costs O(1) (``Roster``); drains and slow start go through the
``HealthRules`` like any other change.

``refresh_tables()`` then builds the hashing tables the change made stale apart
from the lock (after the joins, and again after the leaves), pausing every half
millisecond or so: the pool's picks wait for none of it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator

from ._errors import ConfigError
from ._health_rules import HealthRules
from ._member import PRIMARY, STANDBY, Member
from ._membership import Roster
from ._state import Health
from ._turns import taking_turns
from ._upstream import Upstream, reusing


class Wanted:
    """The wanted upstreams by key, and each one's tier: two dicts rather than
    one of pairs, so that a change of ten thousand upstreams leaves no object per
    upstream for the garbage collector to go through (a millisecond per pass)."""

    __slots__ = ("tiers", "upstreams")

    def __init__(self) -> None:
        self.upstreams: dict[str, Upstream] = {}
        self.tiers: dict[str, int] = {}


def check_update(
    known: dict[str, Member],
    upstreams: Iterable[str | Upstream],
    standbys: Iterable[str | Upstream],
) -> tuple[Wanted, dict[str, Member]]:
    """The wanted upstreams by key (``ConfigError`` for a bad or repeated one),
    and a new member for each of them not in ``known``."""
    wanted = Wanted()
    chosen, tiers = wanted.upstreams, wanted.tiers
    parse = reusing(m.upstream for m in known.values())
    for tier, field, values in (
        (PRIMARY, "upstreams", upstreams),
        (STANDBY, "standbys", standbys),
    ):
        for value in taking_turns(values):
            up = parse(value, field)
            if up.key in chosen:
                raise ConfigError(field, f"duplicate upstream {up.url}")
            chosen[up.key] = up
            tiers[up.key] = tier
    fresh = {
        key: Member(up, tiers[key]) for key, up in taking_turns(chosen.items()) if key not in known
    }
    return wanted, fresh


def apply_in_steps(
    lock: threading.RLock,
    rules: HealthRules,
    clock: Callable[[], float],
    wanted: Wanted,
    fresh: dict[str, Member],
    drain_timeout: float | None,
    step: int,
    apart: bool = True,
) -> Iterator[int]:
    """Make the membership ``wanted``, ``step`` changes per hold of ``lock``;
    yield the number applied so far after each full step. With ``apart``, build
    the hashing tables after the joins and at the end (``refresh_tables()``),
    yielding the same number between its pauses."""
    roster = rules.roster
    with lock:
        # slow start protects newcomers from a load others carry: none to protect
        # when no one serves (the first answer of a discovery, or a pool in panic)
        ramp = roster.any_serving()
        known = list(roster.by_key.values())  # a copy at C speed; sifted apart from the lock
    leaving = [m for m in taking_turns(known) if m.upstream.key not in wanted.upstreams]
    # joining and staying first, leaving last: the pool is never empty between steps;
    # the tables are built for the joined before anyone leaves (None marks it)
    between = [("", None)] if apart and leaving else []
    work: Iterator[tuple[str, Upstream | Member | None]] = itertools.chain(
        wanted.upstreams.items(), between, ((m.upstream.key, m) for m in leaving)
    )
    done = 0
    while True:
        joined = False
        with lock:
            batch = 0
            now = clock()
            for key, item in work:
                if item is None:
                    joined = True
                    break
                batch += 1
                if isinstance(item, Member):
                    if roster.get(key) is item and item.health is not Health.DRAINING:
                        rules.drain(item, drain_timeout, now)
                else:
                    _apply(rules, key, item, wanted.tiers[key], fresh, ramp, now)
                if batch == step:
                    break
            done += batch
        if joined or batch < step:
            for _ in refresh_tables(lock, roster) if apart else ():
                yield done
            if joined:
                continue
            return
        yield done


def refresh_tables(lock: threading.RLock, roster: Roster) -> Iterator[None]:
    """Build every stale hashing table on a snapshot taken under ``lock``, apart
    from it, pausing (``yield``) every half millisecond or so, then install it
    under ``lock``, unless a newer one is in place by then. A change made
    meanwhile is built by whoever made it; until then picks use this table."""
    with lock:
        stale = roster.stale_tables()
    for table, version, members in stale:
        listed = [m for m in taking_turns(members) if m.health is not Health.DRAINING]
        built = yield from table.prepare(listed)
        with lock:
            retired = table.held()  # freed after the lock: 10,000 entries take a millisecond
            if table.install(version, *built):
                roster.dirty = True
        del retired


def _apply(
    rules: HealthRules,
    key: str,
    up: Upstream,
    tier: int,
    fresh: dict[str, Member],
    ramp: bool,
    now: float,
) -> None:
    """One wanted upstream: add it, keep it (weight and tier follow), or bring a
    draining one back as a new member."""
    roster = rules.roster
    member = roster.get(key)
    if member is not None and member.health is Health.DRAINING:
        roster.drop(member)  # back in the registry: it returns as a new member
        member = None
    if member is None:
        rules.admit(fresh.pop(key) if key in fresh else Member(up, tier), ramp, now)
        return
    if tier != member.tier:
        roster.move(member, tier)
    if up.weight != member.weight or up.max_connections != member.upstream.max_connections:
        roster.reweigh(member, up)
