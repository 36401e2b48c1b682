"""Membership and tiers: which upstreams a pool has, in which tier, and which of
them may take requests now.

``Roster`` keeps the members by key and in two tiers, counts each tier's members
by state, and (``rebuild()``, after a change) works out who serves:

* a tier is *sufficient* when it has a member in a serving state and the share of
  its members in one (draining members aside) is at least the pool's
  ``panic_threshold``;
* the first sufficient tier serves; a retry that has tried all of it goes on to
  the next sufficient tier, then to any tier with a serving member;
* when no tier is sufficient the pool panics: it balances over every member of
  every tier that is neither DOWN (active checks failing) nor draining. When
  there is none, nothing can serve and ``pick()`` fails at once.

Every change here is O(1) per member (tiers are insertion-ordered dicts), so a
change of k members costs O(k); the algorithms rebuild their index from the
tiers on the next pick, in O(n). Nothing here decides health: the pool's
``HealthRules`` do, and report each change through ``recount()``.

Hashing tables (``builds_apart``) are the exception: at 10,000 upstreams one
takes about a second to build, too long to hold the lock. Each tier counts the
changes of who is in its table (``Tier.version``: admissions, removals, drains,
moves, new weights); the pool builds the table for a snapshot apart from the
lock (``stale_tables()``, then ``ConsistentHash.prepare()`` and ``install()``),
and ``rebuild()`` meanwhile keeps the last table, excluding its members that are
gone or may not serve. Only a tier with no usable table (its first, or one none
of whose members may serve) has its table built under the lock.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Collection, Container, Iterator
from typing import cast

from ._algorithms import Algorithm
from ._algorithms._hashing import ConsistentHash, run
from ._errors import ConfigError
from ._member import PRIMARY, STANDBY, TIER_NAMES, Member, MemberState
from ._slots import Slots
from ._state import PANIC_ELIGIBLE, SERVING, Health
from ._upstream import Upstream, as_upstream


class TableSkips:
    """The members of a hashing table that a pick must skip: gone from the tier,
    moved, draining or not serving, and ``also``. Tested member by member when a
    pick asks (O(1)), not listed after every change (O(n): a millisecond at
    10,000 upstreams, under the lock)."""

    __slots__ = ("also", "current")

    def __init__(self, current: dict[Member, None], also: Container[Member] = frozenset()) -> None:
        self.current = current
        self.also = also

    def __contains__(self, member: object) -> bool:
        return (
            member in self.also
            or cast("Member", member).health not in SERVING
            or member not in self.current
        )

    def union(self, also: Container[Member]) -> TableSkips:
        return TableSkips(self.current, also)


class PanicSkips:
    """The members of panic's hashing table that a pick must skip while the
    table lags a change of members: gone (or replaced), down, draining or held,
    and ``also``; tested when a pick lands on one, as ``TableSkips``."""

    __slots__ = ("also", "by_key")

    def __init__(self, by_key: dict[str, Member], also: Container[Member] = frozenset()) -> None:
        self.by_key = by_key
        self.also = also

    def __contains__(self, member: object) -> bool:
        m = cast("Member", member)
        return (
            member in self.also
            or m.health not in PANIC_ELIGIBLE
            or self.by_key.get(m.upstream.key) is not m
        )

    def union(self, also: Container[Member]) -> PanicSkips:
        return PanicSkips(self.by_key, also)


class Tier:
    """One tier's members, in configuration order (newcomers last)."""

    __slots__ = ("algorithm", "available", "counts", "members", "name", "unavailable", "version")

    def __init__(self, name: str, algorithm: Algorithm) -> None:
        self.name = name
        self.algorithm = algorithm
        self.members: dict[Member, None] = {}  # a dict, so that removal is O(1)
        # in a serving state, as of the last rebuild (not kept for hashing tiers)
        self.available: list[Member] = []
        self.counts: dict[Health, int] = dict.fromkeys(Health, 0)  # always current
        # Hashing algorithms hold every member, so that an ejection does not move
        # other members' keys; the ones out are excluded at pick time instead.
        self.unavailable: frozenset[Member] | TableSkips = frozenset()
        #: Counts the changes of who a hashing table holds (members not draining,
        #: with their weights); the table built for the latest is current.
        self.version = 0

    @property
    def ejected(self) -> int:
        return self.counts[Health.EJECTED]

    def serving(self) -> int:
        counts = self.counts
        return counts[Health.HEALTHY] + counts[Health.SLOW_START]

    def sufficient(self, threshold: float) -> bool:
        """A member serves, and the share of those who do reaches ``threshold``."""
        serving = self.serving()
        if not serving:
            return False
        listed = len(self.members) - self.counts[Health.DRAINING]
        return serving / listed >= threshold


class Roster:
    """The members of one pool, by key and by tier. Guarded by the pool's lock."""

    __slots__ = (
        "_emit",
        "_panic_algorithm",
        "algorithm",
        "by_key",
        "clock",
        "default_limit",
        "dirty",
        "generation",
        "on_serving",
        "order",
        "panic",
        "panic_out",
        "panic_threshold",
        "rng",
        "serving",
        "slots",
        "tiers",
    )

    def __init__(
        self,
        algorithm: Algorithm,
        rng: _random.Random,
        clock: Callable[[], float],
        panic_threshold: float,
        emit: Callable[[str, Member], None],
        slots: Slots,
        default_limit: int | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.rng = rng
        self.clock = clock
        self.panic_threshold = panic_threshold
        self._emit = emit
        #: Connection limits: who is full now (``_slots.py``), and the limit of
        #: an upstream that gives none of its own.
        self.slots = slots
        self.default_limit = default_limit
        self.by_key: dict[str, Member] = {}
        self.tiers = (
            Tier(TIER_NAMES[PRIMARY], algorithm.bind(rng, clock)),
            Tier(TIER_NAMES[STANDBY], algorithm.bind(rng, clock)),
        )
        #: The tiers a pick tries, in order (empty in panic); set by ``rebuild()``.
        self.order: tuple[Tier, ...] = ()
        self.panic: Algorithm | None = None
        #: What panic's table holds that a pick must skip (``PanicSkips``).
        self.panic_out: frozenset[Member] | PanicSkips = frozenset()
        # Panic's algorithm, kept between rebuilds and panics as the tiers keep
        # theirs: a hashing table stands while its members do, so a change of
        # health in panic costs no new table.
        self._panic_algorithm = algorithm.bind(rng, clock)
        self.dirty = True
        #: Counts admissions and removals: who is a member changed when it did.
        self.generation = 0
        #: Who serves, as of the last rebuild: a tier's name, "panic" or "none";
        #: ``on_serving(old, new)`` hears each change (failover, fail-back, panic).
        self.serving = ""
        self.on_serving: Callable[[str, str], None] | None = None

    def __len__(self) -> int:
        return len(self.by_key)

    def __iter__(self) -> Iterator[Member]:
        """Every member, primaries first, each tier in configuration order."""
        for tier in self.tiers:
            yield from tier.members

    # -- changes ------------------------------------------------------------------

    def create(self, upstream: Upstream, tier: int, field: str) -> Member:
        """A member for ``upstream``, not admitted yet; ``ConfigError`` if it is
        in the pool already."""
        existing = self.by_key.get(upstream.key)
        if existing is not None:
            if existing.tier != tier:
                raise ConfigError(field, f"{upstream.url} is both a primary and a standby")
            raise ConfigError(field, f"duplicate upstream {upstream.url}")
        return Member(upstream, tier)

    def limit_of(self, upstream: Upstream) -> int | None:
        limit = upstream.max_connections
        return self.default_limit if limit is None else limit

    def admit(self, member: Member) -> None:
        member.limit = self.limit_of(member.upstream)
        tier = self.tiers[member.tier]
        tier.members[member] = None
        tier.counts[member.health] += 1
        tier.version += 1
        self.by_key[member.upstream.key] = member
        self.dirty = True
        if self.slots.waiters:  # someone new to serve them
            self.slots.wake()
        self.generation += 1

    def drop(self, member: Member) -> None:
        """Remove ``member`` (if it is still the pool's member for its upstream)."""
        if self.by_key.get(member.upstream.key) is not member:
            return
        del self.by_key[member.upstream.key]
        tier = self.tiers[member.tier]
        del tier.members[member]
        tier.counts[member.health] -= 1
        if member.health is not Health.DRAINING:  # a draining one left the table already
            tier.version += 1
        self.dirty = True
        self.slots.full.discard(member)
        self.generation += 1
        self._emit("removed", member)

    def move(self, member: Member, tier: int) -> None:
        """Move ``member`` to another tier (last in its order), statistics and all."""
        old = self.tiers[member.tier]
        del old.members[member]
        old.counts[member.health] -= 1
        member.tier = tier
        self.tiers[tier].members[member] = None
        self.tiers[tier].counts[member.health] += 1
        old.version += 1
        self.tiers[tier].version += 1
        self.dirty = True

    def reweigh(self, member: Member, upstream: Upstream) -> None:
        """``member``'s weight and limit follow ``upstream``'s."""
        member.upstream = upstream
        member.weight = upstream.weight
        limit = self.limit_of(upstream)
        if limit != member.limit:
            member.limit = limit
            self.slots.relimit(member)
        self.tiers[member.tier].version += 1
        self.dirty = True

    def recount(self, member: Member, old: Health, new: Health) -> None:
        """``member``'s state went from ``old`` to ``new``."""
        tier = self.tiers[member.tier]
        tier.counts[old] -= 1
        tier.counts[new] += 1
        if old is Health.DRAINING or new is Health.DRAINING:
            tier.version += 1
        if old not in SERVING or new not in SERVING:  # else who serves is the same
            self.dirty = True

    # -- reading ------------------------------------------------------------------

    def get(self, key: str) -> Member | None:
        return self.by_key.get(key)

    def lookup(self, upstream: str | Upstream) -> Member:
        key = as_upstream(upstream).key
        member = self.by_key.get(key)
        if member is None:
            raise KeyError(f"no upstream {key} in this pool")
        return member

    def named(self, exclude: Collection[Member | MemberState | Upstream]) -> Collection[Member]:
        """The members ``exclude`` names: members, or readings and upstreams (by key)."""
        if all(type(m) is Member for m in exclude):
            return cast("Collection[Member]", exclude)
        found: set[Member] = set()
        for item in exclude:
            if isinstance(item, Member):
                found.add(item)
            else:
                member = self.by_key.get(
                    item.key if isinstance(item, Upstream) else item.upstream.key
                )
                if member is not None:
                    found.add(member)
        return found

    def last_resort(self, exclude: Collection[Member]) -> Member | None:
        """For one retry with nowhere else to go: the member with the fewest
        requests in flight per weight among those panic could pick."""
        left = [m for m in self if m.health in PANIC_ELIGIBLE and m not in exclude]
        return min(left, key=lambda m: m.in_flight / m.weight) if left else None

    def sufficient(self, tier: int) -> bool:
        """Whether ``tier`` may serve on its own (O(1), current between rebuilds)."""
        return self.tiers[tier].sufficient(self.panic_threshold)

    def count(self, state: Health) -> int:
        return sum(tier.counts[state] for tier in self.tiers)

    def any_serving(self) -> bool:
        """A member of some tier is in a serving state (O(1))."""
        return any(tier.serving() for tier in self.tiers)

    # -- hashing tables -------------------------------------------------------------

    def _table_exclusions(self, tier: Tier) -> frozenset[Member] | TableSkips:
        """The members of ``tier``'s table that a pick must skip: gone, moved,
        draining or not serving. A table none of whose members may serve is
        built again at once (under the lock: the tier's first table too)."""
        table = cast("ConsistentHash", tier.algorithm)
        if table.version == tier.version and tier.serving() == len(tier.members):
            return frozenset()  # the table is current and all of it serves: O(1)
        members = tier.members
        if any(m.health in SERVING and m in members for m in table.members):
            return TableSkips(members)  # found at once unless most are out
        listed = [m for m in members if m.health is not Health.DRAINING]
        table.install(tier.version, *run(table.prepare(listed)))
        return TableSkips(members)

    def stale_tables(self) -> list[tuple[ConsistentHash, int, list[Member]]]:
        """The hashing tables that lag their tier's membership: each algorithm,
        the version, and a snapshot of the tier's members (its new table holds
        those not draining: sifting them is the caller's, apart from the lock).
        Under the lock."""
        stale = []
        for tier in self.tiers:
            table = cast("ConsistentHash", tier.algorithm)
            if table.builds_apart and table.version != tier.version:
                stale.append((table, tier.version, list(tier.members)))
        return stale

    def _rebuild_panic(self, panic: Algorithm, eligible: list[Member]) -> None:
        """Panic's candidates. A hashing table is taken from a tier that has one
        for the same upstreams (one tier, none down by active checks) and kept
        while they stay. While a tier's table is being built for a change of
        members, panic keeps its own and skips who left (``PanicSkips``): the
        install calls for a rebuild, which takes the new one. Otherwise the
        table is built here, under the lock."""
        self.panic_out = frozenset()
        if panic.builds_apart:
            table = cast("ConsistentHash", panic)
            tables = {t: cast("ConsistentHash", t.algorithm) for t in self.tiers}
            if any(table.share(other, eligible) for other in tables.values()):
                return
            lagging = any(t.version != other.version for t, other in tables.items())
            skips = PanicSkips(self.by_key)
            if lagging and any(m not in skips for m in table.members):  # one may serve
                self.panic_out = skips
                return
        panic.rebuild(eligible)

    # -- who serves ---------------------------------------------------------------

    def rebuild(self) -> None:
        """Candidates of each tier, the order a pick tries them in, and panic."""
        for tier in self.tiers:
            algorithm = tier.algorithm
            if algorithm.builds_apart:
                tier.available = []
                up = tier.serving()
                tier.unavailable = self._table_exclusions(tier) if up else frozenset()
                continue
            tier.available = [m for m in tier.members if m.health in SERVING]
            if algorithm.hashes and tier.available:
                listed = [m for m in tier.members if m.health is not Health.DRAINING]
                tier.unavailable = frozenset(listed).difference(tier.available)
                algorithm.rebuild(listed)
            else:
                tier.unavailable = frozenset()
                algorithm.rebuild(tier.available)
        threshold = self.panic_threshold
        sufficient = tuple(t for t in self.tiers if t.sufficient(threshold))
        if sufficient:
            below = tuple(t for t in self.tiers if t.serving() and t not in sufficient)
            self.order = sufficient + below
            self.panic = None
        else:
            self.order = ()
            eligible = [m for m in self if m.health in PANIC_ELIGIBLE]
            self.panic = self._panic_algorithm if eligible else None
            if self.panic is not None:
                self._rebuild_panic(self.panic, eligible)
        self.dirty = False
        serving = self.order[0].name if self.order else "panic" if self.panic else "none"
        if serving != self.serving:
            before, self.serving = self.serving, serving
            if before and self.on_serving is not None:
                self.on_serving(before, serving)
