"""Consistent hashing (Maglev): ``consistent_hash`` and ``ip_hash``.

A table is a function of the membership alone (the upstream keys, weights and
order), so that every process with the same upstreams sends a key to the same
one. Building it is the costly part (about a second of CPU at 10,000 upstreams,
whose table has a million entries; a sixth of that with numpy, which gives the
same table: ``_maglev_arrays``), so a pool builds it apart from its lock
(``prepare()`` on a snapshot, then ``install()``) and picks from the last table
meanwhile, skipping its members that are gone or may not serve: a key moves
only if its upstream left (to the next owner along the table, as for an
ejection) until the new table, where it moves only if its upstream left or a
newcomer took its slot. See ``Roster.rebuild()`` and ``refresh_tables()``.
"""

from __future__ import annotations

import hashlib
import math
import random as _random
from collections.abc import Callable, Container, Generator, Sequence
from typing import ClassVar, Self, TypeVar

from .._errors import ConfigError
from .._member import Member
from . import _maglev_arrays
from ._base import Algorithm
from ._blank import blank_table

#: Work (probes of the table) between two pauses of a build, about 0.5 ms.
BUILD_CHUNK = 8192
#: Members read between two pauses of a build (their keys hashed, at worst).
MEMBERS_CHUNK = 512
#: What the plain fill's own work for one entry costs, in probes.
ENTRY_COST = 5
#: Probes an entry costs on average when the plain fill starts counting each one:
#: late in the fill an entry's walk is long and its length varies widely.
COUNT_AFTER = 256


def hash64(text: str) -> int:
    """A stable 64-bit hash: the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


#: The smallest default Maglev table (a prime is taken at or above the size).
MIN_TABLE_SIZE = 1 << 16


def _next_prime(n: int) -> int:
    def is_prime(k: int) -> bool:
        if k < 2 or k % 2 == 0:
            return k == 2
        return all(k % d for d in range(3, math.isqrt(k) + 1, 2))

    while not is_prime(n):
        n += 1
    return n


def fill(
    size: int, hashes: Sequence[int], weights: Sequence[float]
) -> Generator[None, None, Sequence[int]]:
    """Maglev's table of ``size`` entries (a prime): each member in turn takes the
    next free entry of its own permutation, lighter members skipping turns in
    proportion to their weight. Yields after about ``BUILD_CHUNK`` probes (late
    in the fill, in the middle of a member's walk), so that a caller may let other
    threads run; returns the table (member indexes).

    Member ``i`` walks ``offset + j * skip (mod size)``; stepping by ``skip`` and
    marking taken entries in a ``bytearray`` gives the same table as the paper's
    formulation several times faster. Most of the cost is the end of the fill,
    when a member probes about ``size / free`` entries for each one it takes.
    """
    slots: list[int] = []
    skips: list[int] = []
    for start in range(0, len(hashes), MEMBERS_CHUNK):
        if start:
            yield
        part = hashes[start : start + MEMBERS_CHUNK]
        slots += [h % size for h in part]
        skips += [(h >> 32) % (size - 1) + 1 for h in part]
    top = max(weights)
    shares = None if min(weights) == top else [w / top for w in weights]
    counts = [0] * len(hashes)
    table = yield from blank_table(size)  # an array: nothing for the collector to go through
    taken = bytearray(size)
    yield
    filled = 0
    pause = BUILD_CHUNK
    counting = False
    turn = 0
    members = range(len(hashes))
    while True:
        turn += 1
        for i in members:
            if shares is not None:
                if counts[i] >= turn * shares[i]:
                    continue  # a lighter member waits its turn
                counts[i] += 1
            slot, skip = slots[i], skips[i]
            if counting:  # each probe counted: one entry's walk may need pauses
                while taken[slot]:
                    slot += skip
                    if slot >= size:
                        slot -= size
                    pause -= 1
                    if not pause:
                        pause = BUILD_CHUNK
                        yield
            else:
                while taken[slot]:
                    slot += skip
                    if slot >= size:
                        slot -= size
            taken[slot] = 1
            table[slot] = i
            slot += skip
            slots[i] = slot - size if slot >= size else slot
            filled += 1
            if filled == size:
                return table
            if not counting:
                cost = size // (size - filled)  # the probes one entry costs now, on average
                pause -= cost + ENTRY_COST
                counting = cost > COUNT_AFTER
                if pause <= 0:
                    pause = BUILD_CHUNK
                    yield


T = TypeVar("T")


def run(build: Generator[None, None, T]) -> T:
    """Drive a build to its end without pausing."""
    while True:
        try:
            next(build)
        except StopIteration as done:
            table: T = done.value
            return table


class ConsistentHash(Algorithm):
    """Maglev consistent hashing of a request key (``hash_on=``).

    A lookup table of prime size is filled by each member in turn from its own
    permutation, in proportion to its weight. A key's slot depends on the table
    size, so the size must not follow every membership change: it is 65,537 (as in
    Maglev and Envoy) and grows only in powers of two, to keep at least 100 entries
    per member past 648 members; ``table_size`` fixes it (rounded up to a prime).
    Each member owns an equal share of the table (so load is even), and removing
    one member reassigns its own entries and very few others. A pick is one hash
    and one table read. A request without a key is placed at random.
    """

    name = "consistent_hash"
    hashes = True
    builds_apart: ClassVar[bool] = True

    def __init__(self, table_size: int | None = None) -> None:
        if table_size is not None and (not isinstance(table_size, int) or table_size < 2):
            raise ConfigError("table_size", f"must be a whole number >= 2, got {table_size!r}")
        self.table_size = table_size
        #: The version of the membership the table was built for (-1: none yet).
        self.version = -1
        self.members: tuple[Member, ...] = ()
        self.table: Sequence[int] = []
        self._signature: list[tuple[str, float]] = []
        self._hashes: dict[str, int] = {}

    def bind(self, rng: _random.Random, clock: Callable[[], float]) -> Self:
        clone = super().bind(rng, clock)
        clone._hashes = {}  # each tier's own, read and written apart from the lock
        return clone

    def rebuild(self, members: Sequence[Member]) -> None:
        """Build the table for ``members`` at once (a first build, panic)."""
        self._take(*run(self.prepare(members)))

    def prepare(
        self, members: Sequence[Member]
    ) -> Generator[None, None, tuple[tuple[Member, ...], list[tuple[str, float]], Sequence[int]]]:
        """Build a table for ``members`` (a snapshot) without touching this
        algorithm's state, pausing (``yield``) every half millisecond or so;
        returns what ``install()`` takes. Needs no lock."""
        chosen = tuple(members)
        n = len(chosen)
        signature: list[tuple[str, float]] = []
        for start in range(0, n, MEMBERS_CHUNK):
            if start:
                yield
            signature += [(m.upstream.key, m.weight) for m in chosen[start : start + MEMBERS_CHUNK]]
        if signature == self._signature:
            return chosen, signature, self.table  # the same upstreams: the table stands
        if not n:
            return chosen, signature, []
        known = self._hashes
        if len(known) > 2 * n:
            known = self._hashes = {}  # forget members long gone
        hashes: list[int] = []
        weights: list[float] = []
        for start in range(0, n, MEMBERS_CHUNK):
            yield
            for key, weight in signature[start : start + MEMBERS_CHUNK]:
                h = known.get(key)
                if h is None:
                    h = known[key] = hash64(key)
                hashes.append(h)
                weights.append(weight)
        size = self.table_size or max(MIN_TABLE_SIZE, 1 << (101 * n - 1).bit_length())
        fast = n >= _maglev_arrays.MIN_MEMBERS and _maglev_arrays.available()
        build = _maglev_arrays.fill if fast else fill
        table = yield from build(_next_prime(size), hashes, weights)
        return chosen, signature, table

    def install(
        self,
        version: int,
        members: tuple[Member, ...],
        signature: list[tuple[str, float]],
        table: Sequence[int],
    ) -> bool:
        """Take a table ``prepare()`` built for membership ``version``, unless a
        newer one is in place already; under the pool's lock."""
        if version <= self.version:
            return False
        self.version = version
        self._take(members, signature, table)
        return True

    def share(self, other: ConsistentHash, members: Sequence[Member]) -> bool:
        """Take ``other``'s table when it was built for exactly ``members`` (the
        same upstreams and weights): panic over one tier's upstreams needs no
        table of its own. Tables are replaced, never changed, so two may hold one."""
        theirs, signature = other.members, other._signature
        if len(theirs) != len(members) or other.table_size != self.table_size:
            return False
        for m, held, (_, weight) in zip(members, theirs, signature, strict=True):
            if m is not held or m.weight != weight:  # compared in place: no garbage
                return False
        self._take(theirs, signature, other.table)
        return True

    def held(self) -> tuple[object, ...]:
        """What ``install()`` replaces, for a caller to let go of apart from the lock."""
        return self.members, self._signature, self.table

    def _take(
        self, members: tuple[Member, ...], signature: list[tuple[str, float]], table: Sequence[int]
    ) -> None:
        self.members, self._signature, self.table = members, signature, table

    def pick(self, key: str | None, exclude: Container[Member]) -> Member | None:
        table = self.table
        if not table:
            return None
        slot = int(self.rng.random() * len(table)) if key is None else hash64(key) % len(table)
        m = self.members[table[slot]]
        if exclude and m in exclude:
            if all(x in exclude for x in self.members):  # stops at the first usable
                return None
            size = len(table)
            for step in range(1, size):  # the next owner along the table
                m = self.members[table[(slot + step) % size]]
                if m not in exclude:
                    break
        return m


class IpHash(ConsistentHash):
    """Maglev consistent hashing of the client address: removing an upstream
    remaps only the clients it served."""

    name = "ip_hash"
