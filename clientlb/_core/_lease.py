"""``Lease``: one attempt at one upstream, from ``Pool.pick()`` until ``finish()``.

A lease settles its attempt with its pool, under the pool's lock: the response
status and latency when headers arrive (passive health, the latency estimates,
the pool's latency window), and the in-flight slot when the attempt ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._decision import Candidate
from ._member import Member, MemberState
from ._outcome import FAILURES, Outcome
from ._state import Health
from ._upstream import Upstream

if TYPE_CHECKING:
    from ._picking import Picking

_DRAINING = Health.DRAINING
_SUCCESS = Outcome.SUCCESS


class Lease:
    """One attempt at one upstream, from ``pick()`` until ``finish()``.

    The shell reports ``responded(status)`` when response headers arrive (this
    records latency and the status for outlier detection) and ``finish()`` when the
    response body is closed or the attempt failed (this releases the in-flight
    slot). ``finish()`` may be called more than once; only the first counts.

    ``upstream`` is where the attempt goes, ``started`` when (the pool's clock),
    ``status`` and ``elapsed`` what came back and after how long; ``reason``
    why the pool picked it (``"balanced"``, ``"failover"``, ``"sticky"``,
    ``"panic"``, ``"last resort"``) and ``candidates`` what it weighed, when
    the pick was explained (``Pool.pick(explain=True)``); ``state()``
    reads that upstream's state in the pool. ``member`` is the pool's own record
    of the upstream, for the core's use only.
    """

    __slots__ = (
        "_pool",
        "candidates",
        "done",
        "elapsed",
        "member",
        "reason",
        "started",
        "status",
    )

    def __init__(self, pool: Picking, member: Member, started: float, reason: str = "") -> None:
        self._pool = pool
        self.member = member
        self.started = started
        #: Why this upstream (see ``Pool.pick``); the candidates when explained.
        self.reason = reason
        self.candidates: tuple[Candidate, ...] = ()
        self.status: int | None = None
        self.elapsed: float | None = None
        self.done = False

    @property
    def upstream(self) -> Upstream:
        return self.member.upstream

    def state(self) -> MemberState:
        """The upstream's state in the pool now (a reading, as ``Pool.members``)."""
        return self._pool._read(self.member)

    def responded(self, status: int) -> None:
        """Response headers arrived with ``status``."""
        if self.status is not None or self.done:
            return
        pool = self._pool
        lock = pool._lock  # acquire()/release(): half the cost of a with block on an RLock
        lock.acquire()
        try:
            now = pool.clock()
            member = self.member
            self.status = status
            self.elapsed = elapsed = now - self.started
            member.answered(self.started)
            rules = pool._rules
            if status < 500:
                rules.succeeded(member, elapsed, now)
                pool._latencies.add(elapsed)
            else:
                rules.failed_status(member, status, elapsed, now)
            if pool._tracks_load or now >= rules.latency_due:  # else nothing to settle
                pool._settled(member, now)
        finally:
            lock.release()

    def finish(self, outcome: Outcome = Outcome.SUCCESS) -> None:
        """The attempt is over: body closed (``SUCCESS``), failed, or cancelled."""
        if self.done:
            return
        pool = self._pool
        lock = pool._lock  # as in responded()
        lock.acquire()
        try:
            if self.done:
                return
            self.done = True
            now = pool.clock()
            member = self.member
            member.in_flight -= 1
            if pool._full:
                pool._slots.freed(member)
            if self.elapsed is None:
                member.answered(self.started)
            rules = pool._rules
            if outcome is _SUCCESS:  # first: the common case, and no enum hashing
                if self.elapsed is None:
                    self.elapsed = elapsed = now - self.started
                    rules.succeeded(member, elapsed, now)
                    pool._latencies.add(elapsed)
            elif outcome in FAILURES:
                unmeasured = self.elapsed is None
                if unmeasured:
                    self.elapsed = now - self.started
                refused = outcome is Outcome.CONNECT_FAILURE
                rules.failed(member, self.elapsed if unmeasured else None, now, refused)
            elif outcome is Outcome.CANCELLED and self.elapsed is None:
                # No answer after this long (a hedge that lost, a caller that
                # gave up): a lower bound on the upstream's latency, which only
                # tells something when it is above the estimate.
                self.elapsed = elapsed = now - self.started
                if member.sampled and elapsed > member.ewma:
                    member.observe(elapsed, now)
            if member.health is _DRAINING and member.in_flight == 0:
                pool._roster.drop(member)
            if pool._tracks_load or now >= rules.latency_due:
                pool._settled(member, now)
        finally:
            lock.release()

    def __repr__(self) -> str:
        return f"<Lease {self.member.upstream.key} done={self.done}>"
