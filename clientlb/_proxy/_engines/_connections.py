"""Bookkeeping of the connections to one upstream, shared by every engine.

Sans-IO: the engines own the sockets and the waiting; this says which idle
connection to reuse, when one more may be opened, and which idle ones have
waited too long. A connection is idle only after a response that ended exactly
at its framing, on a connection both sides let live (``ResponseReader.reusable``);
an idle connection that closed or received a byte in the meantime is skipped
(the engine closes it), so a request is only ever written to a connection that
was clean when it was picked.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from ._base import UpstreamLimits


class Reusable(Protocol):
    @property
    def usable(self) -> bool: ...


C = TypeVar("C", bound=Reusable)


class UpstreamConnections(Generic[C]):
    """Open connections to one upstream: at most ``limit`` (in use or idle), of
    which at most ``max_idle`` idle, each idle for at most ``idle_timeout`` s."""

    __slots__ = ("idle", "idle_timeout", "limit", "max_idle", "open", "waiting")

    def __init__(self, limit: int | None, max_idle: int, idle_timeout: float) -> None:
        self.limit = limit
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: list[tuple[float, C]] = []  # (idle since, connection), newest last
        self.open = 0
        self.waiting = 0  # requests the engine has waiting for a slot here

    @property
    def unused(self) -> bool:
        """No connection open, none being opened, and nobody waiting for one."""
        return not self.open and not self.idle and not self.waiting

    def take_idle(self, now: float, stale: list[C]) -> C | None:
        """The most recently used idle connection that is still clean, or ``None``.
        Unusable or expired ones met on the way are moved to ``stale``, for the
        caller to close (each still counts as open until ``closed()``)."""
        idle = self.idle
        oldest = now - self.idle_timeout
        while idle:
            since, conn = idle.pop()
            if since >= oldest and conn.usable:
                return conn
            stale.append(conn)
        return None

    def reserve(self) -> bool:
        """Count one more open connection if the limit allows it."""
        if self.limit is not None and self.open >= self.limit:
            return False
        self.open += 1
        return True

    def put_idle(self, conn: C, now: float) -> bool:
        """Keep a connection for reuse; ``False`` if enough are idle already."""
        if len(self.idle) >= self.max_idle:
            return False
        self.idle.append((now, conn))
        return True

    def closed(self) -> None:
        """A connection counted by ``reserve()`` is gone."""
        self.open -= 1

    def expire(self, now: float) -> list[C]:
        """Remove and return the idle connections that waited too long or broke."""
        oldest = now - self.idle_timeout
        keep = [(s, c) for s, c in self.idle if s >= oldest and c.usable]
        if len(keep) == len(self.idle):
            return []
        gone = [c for s, c in self.idle if not (s >= oldest and c.usable)]
        self.idle = keep
        return gone


class ConnectionTable(Generic[C]):
    """Every upstream's connections, by upstream key, under one set of limits."""

    __slots__ = ("_by_key", "_next_sweep", "limits")

    def __init__(self, limits: UpstreamLimits) -> None:
        self.limits = limits
        self._by_key: dict[str, UpstreamConnections[C]] = {}
        self._next_sweep = 0.0

    def of(self, key: str) -> UpstreamConnections[C]:
        """The connections to the upstream ``key`` (created on first use)."""
        conns = self._by_key.get(key)
        if conns is None:
            limits = self.limits
            conns = self._by_key[key] = UpstreamConnections(
                limits.max_connections, limits.max_idle, limits.idle_timeout
            )
        return conns

    def __len__(self) -> int:
        """Upstreams with an entry (connections, or a request waiting for one)."""
        return len(self._by_key)

    def sweep_due(self, now: float) -> bool:
        """Whether an engine without timers should ``expire()`` now: every half
        idle timeout (between sweeps ``take_idle`` skips what expired), not on
        every request, as a sweep visits every upstream."""
        if now < self._next_sweep:
            return False
        self._next_sweep = now + self.limits.idle_timeout / 2
        return True

    def expire(self, now: float) -> list[C]:
        """Remove and return every upstream's idle connections past their time,
        and forget the upstreams left unused (see ``UpstreamConnections.unused``):
        with discovery, upstreams come and go, and the table must not keep every
        one it ever saw. One whose last connections expire now goes at the next
        sweep, once the engine has closed them."""
        gone: list[C] = []
        unused: list[str] = []
        for key, conns in self._by_key.items():
            if conns.idle:
                gone += conns.expire(now)
            elif conns.unused:
                unused.append(key)
        for key in unused:
            del self._by_key[key]
        return gone

    def any_idle(self) -> bool:
        return any(conns.idle for conns in self._by_key.values())

    def forget_idle(self) -> None:
        """Drop every idle list (the engine is closing every connection itself)."""
        for conns in self._by_key.values():
            conns.idle.clear()
