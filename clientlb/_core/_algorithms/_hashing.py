"""Consistent hashing (Maglev): ``consistent_hash`` and ``ip_hash``."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence

from .._errors import ConfigError
from .._member import Member
from ._base import Algorithm


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

    def __init__(self, table_size: int | None = None) -> None:
        if table_size is not None and (not isinstance(table_size, int) or table_size < 2):
            raise ConfigError("table_size", f"must be a whole number >= 2, got {table_size!r}")
        self.table_size = table_size

    def rebuild(self, members: Sequence[Member]) -> None:
        signature = [(m.upstream.key, m.weight) for m in members]
        if getattr(self, "signature", None) == signature:
            self.members = list(members)  # the same upstreams: the table stands
            return
        self.signature = signature
        self.members = list(members)
        n = len(self.members)
        if not n:
            self.table: list[int] = []
            return
        size = self.table_size or max(MIN_TABLE_SIZE, 1 << (101 * n - 1).bit_length())
        self.table = self._populate(_next_prime(size))

    def _populate(self, size: int) -> list[int]:
        offsets, skips = [], []
        for m in self.members:
            h = hash64(m.upstream.key)
            offsets.append(h % size)
            skips.append((h >> 32) % (size - 1) + 1)
        top = max(m.weight for m in self.members)
        shares = [m.weight / top for m in self.members]
        table = [-1] * size
        nexts = [0] * len(self.members)
        counts = [0] * len(self.members)
        filled = 0
        turn = 0
        while True:
            turn += 1
            for i, share in enumerate(shares):
                if counts[i] >= turn * share:
                    continue  # a lighter member waits its turn
                offset, skip, j = offsets[i], skips[i], nexts[i]
                slot = (offset + j * skip) % size
                while table[slot] >= 0:
                    j += 1
                    slot = (offset + j * skip) % size
                table[slot] = i
                nexts[i] = j + 1
                counts[i] += 1
                filled += 1
                if filled == size:
                    return table

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        table = self.table
        if not table:
            return None
        slot = int(self.rng.random() * len(table)) if key is None else hash64(key) % len(table)
        m = self.members[table[slot]]
        if exclude and m in exclude:
            if len(exclude) >= len(self.members) and all(x in exclude for x in self.members):
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
