"""Driving one request's attempts: the plan decides, these loops carry it out.

Every shell that sends a request upstream (the httpx transports, the ASGI and
WSGI proxies, the WebSocket relay) hands a driver one function that makes one
attempt at one lease, and gets back the result to deliver or the error that
ends the call:

    result = await adrive(plan, attempt, rules)     # drive() for the sync twins

* The first attempt runs directly (the hot path), after waiting for a slot
  if every upstream is at its connection limit (``clientlb._slots``); when the plan lets a failed
  one go again, tenacity is the loop: its ``retry`` is the plan's verdict
  (``AttemptPlan.retry_after``), its ``wait`` the plan's backoff, its ``stop``
  the call's deadline.
* Every attempt is recorded in ``plan.history`` the same way (a response with
  its status, a failure with its outcome, a hedge that lost as cancelled), and
  settles its lease: on failure here, on success when the shell's result is
  closed (or ``rules.discard``-ed, for a response that is retried).
* Each attempt is bounded by ``plan.attempt_timeout()`` (async: a cancel scope;
  sync: the shell passes it to its I/O). An idempotent request unanswered after
  ``plan.hedge_delay()`` gets a hedge at another upstream (async only): the first
  answer wins, the other attempt is cancelled.
* When the call's time runs out the call ends with ``rules.timeout_error``; when
  nothing was left to try, with the last attempt's error (or the plan's
  ``NoUpstream`` if nothing was tried at all). The shells turn that into what
  they raise or answer (``clientlb._errors_map``).
* Cancellation at any await point settles every lease and closes every result
  that will not be delivered.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import tenacity

from ._core import AttemptPlan, Lease, NoUpstream, Outcome, Saturated
from ._core._plan import OutOfTime
from ._errors_map import is_transport_error, outcome_of
from ._httpx import httpx
from ._slots import await_slot, first_lease

R = TypeVar("R")

#: Where every shell leaves a call's attempt history: the response's
#: ``extensions`` (transports), the ASGI scope's ``extensions`` and the WSGI
#: environ (proxies), for the caller or an outer middleware to read.
ATTEMPTS_EXTENSION = "clientlb.attempts"
#: Where a response carries its ``Decision`` (why this upstream).
DECISION_EXTENSION = "clientlb.decision"
#: A request that sets it to ``True`` gets the candidates in its decision.
EXPLAIN_EXTENSION = "clientlb.explain"


@dataclass(frozen=True, slots=True)
class Rules(Generic[R]):
    """What a driver needs of a shell: a result's status; how a result takes
    charge of its lease (``keep``: the lease is settled when the result is
    closed); whether the request's body can still be sent again; and whether it
    may be sent twice at once (``hedgeable``: held whole in memory); and how
    long a call may wait for a slot when every upstream is at its connection
    limit (``queue_timeout``: the shell's pool timeout; ``None`` for no bound
    but the call's own deadline; see ``clientlb._slots``); and the error a call
    or an attempt whose time ran out ends with (``timeout_error``: the
    ``ReadTimeout`` of the shell's client library)."""

    status: Callable[[R], int]
    keep: Callable[[R, Lease], R]
    replayable: Callable[[], bool]
    hedgeable: bool = False
    queue_timeout: float | None = None
    timeout_error: type[Exception] = httpx.ReadTimeout


class _Call(Generic[R]):
    """One call's state between attempts: what tenacity's hooks read."""

    __slots__ = ("error", "exhausted", "plan", "result", "rules")

    def __init__(self, plan: AttemptPlan, rules: Rules[R]) -> None:
        self.plan = plan
        self.rules = rules
        self.result: R | None = None  # a response that may still be the answer
        self.error: BaseException | None = None
        self.exhausted = False  # nowhere else to go: the last result stands

    def again(self, result: R | None, error: BaseException | None) -> bool:
        """The plan's verdict on the attempt that just ended."""
        if self.exhausted:
            return False
        plan, rules = self.plan, self.rules
        if error is not None:
            if not is_transport_error(error):
                return False
            return plan.retry_after(outcome_of(error), replayable=rules.replayable())
        assert result is not None
        status = rules.status(result)
        if status not in plan.policy.retry_on_status:
            return False
        return plan.retry_after(None, status=status, replayable=rules.replayable())

    def retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None
        if outcome.failed:
            return self.again(None, outcome.exception())
        return self.again(outcome.result(), None)

    def wait(self, state: tenacity.RetryCallState) -> float:
        return self.plan.backoff()

    def stop(self, state: tenacity.RetryCallState) -> bool:
        return self.plan.out_of_time()

    def next_lease(self) -> Lease | None:
        """The next attempt's lease; ``None`` when there is nowhere else to go,
        the last result standing (or the last error raised)."""
        try:
            return self.plan.next()
        except NoUpstream:
            self.exhausted = True
            if self.result is not None:
                return None
            if self.error is not None:
                raise self.error from None
            raise
        except OutOfTime:
            self.exhausted = True
            if self.result is not None:
                return None
            raise self.rules.timeout_error("the call's time ran out") from None

    def advance(self) -> tuple[Lease | None, R | None]:
        """Where the next attempt goes, with the result it replaces (the caller
        discards it); or ``(None, result)`` when the result in hand is the
        answer, as nowhere is left to go or no time to go there."""
        if self.plan.out_of_time():
            self.exhausted = True
            if self.result is None:
                raise self.rules.timeout_error("the call's time ran out")
            return None, self.result
        lease = self.next_lease()
        held, self.result = self.result, None
        if lease is None:
            assert held is not None
            return None, held
        return lease, held


def _attempt_failed(plan: AttemptPlan, lease: Lease, error: BaseException) -> None:
    """Settle a lease whose attempt ended without a result."""
    outcome = outcome_of(error) if isinstance(error, Exception) else Outcome.CANCELLED
    lease.finish(outcome)
    plan.record(lease, outcome)


def _attempt_answered(plan: AttemptPlan, rules: Rules[R], lease: Lease, result: R) -> R:
    """Record an answer and hand its lease to it."""
    status = rules.status(result)
    lease.responded(status)
    plan.record(lease, "response", status)
    return rules.keep(result, lease)


# -- the shell's own first attempt -------------------------------------------------
#
# A driver's common case is one attempt with no timeout and no hedge that
# answers with a status not to retry on. A shell may make that attempt itself,
# in its own frame (no coroutine of the driver's, no attempt function made),
# and call the driver only when it has to: with ``settled``, the first
# attempt's result or error, once the plan may retry. These functions make it
# the attempt the driver would have made: settled, recorded and judged alike.


def express_lease(plan: AttemptPlan) -> Lease | None:
    """The first attempt's lease when the shell may make that attempt itself:
    the plan has no timeout and no hedge (``plan.untimed``) and a slot is free;
    ``None`` when the driver makes it (it waits for a slot). Raises
    ``NoUpstream`` as the driver would."""
    if not plan.untimed:
        return None
    try:
        return plan.first()
    except Saturated:
        return None


#: Record the shell's first attempt's answer and hand its lease to it. The
#: answer stands unless its status is one the plan may retry on
#: (``plan.policy.retry_on_status``): then the driver judges it (``settled``).
express_answered = _attempt_answered


def express_failed(
    plan: AttemptPlan, rules: Rules[R], lease: Lease, error: BaseException, timed: bool = True
) -> Exception:
    """Settle and record the shell's first attempt that raised ``error``: the
    error to hand the driver (a ``TimeoutError`` as ``rules.timeout_error``, as
    ``adrive()`` has it; not with ``timed=False``, as ``drive()`` has it).
    Re-raises what is no ``Exception`` (cancellation)."""
    if timed and isinstance(error, TimeoutError):
        timed_out = rules.timeout_error("the attempt's time ran out")
        _attempt_failed(plan, lease, timed_out)
        return timed_out
    _attempt_failed(plan, lease, error)
    if not isinstance(error, Exception):
        raise error
    return error


def _verdict(
    plan: AttemptPlan, rules: Rules[R], result: R | None, failure: Exception | None
) -> _Call[R] | None:
    """The verdict on a call's first attempt (its ``result``, or its ``failure``):
    ``None`` when the result is the answer, else the call's state, made only now,
    for the retries. Raises ``failure`` when no retry may follow it."""
    if failure is not None:
        call = _Call(plan, rules)
        if not call.again(None, failure):
            raise failure
        call.error = failure
        return call
    assert result is not None
    # a status not to retry on: the answer, without again()'s call
    if rules.status(result) not in plan.policy.retry_on_status:
        return None
    call = _Call(plan, rules)
    if not call.again(result, None):
        return None
    call.result = result
    return call


# -- async ------------------------------------------------------------------------


async def adrive(
    plan: AttemptPlan,
    attempt: Callable[[Lease, float | None], Awaitable[R]],
    rules: Rules[R],
    discard: Callable[[R], Awaitable[None]],
    settled: tuple[R | None, Exception | None] | None = None,
) -> R:
    """Run ``attempt`` until one result is the answer (see the module doc).
    ``discard`` closes a result that will not be delivered (and so settles its
    lease). ``settled`` is the first attempt's result or error when the caller
    made that attempt itself, recorded and settled as here (the proxy's express
    lane): the driver goes on from its verdict."""
    result: R | None = None
    failure: Exception | None = None
    if settled is not None:
        result, failure = settled
    else:
        try:
            lease = plan.first()  # afirst_lease() without its coroutine, while slots are free
        except Saturated as full:
            lease = await await_slot(plan, rules.queue_timeout, full.version)
        # The call's state (_Call) is made once a retry may follow: the first
        # attempt only reads its plan and rules, and changes nothing in it.
        try:
            untimed = plan.untimed
            delay = None if untimed or not rules.hedgeable else plan.hedge_delay()
            if delay is not None:
                result = await _hedged(_Call(plan, rules), attempt, discard, lease, delay)
            elif not untimed and plan.attempt_timeout() is not None:
                result = await _one(_Call(plan, rules), attempt, lease)
            else:  # _one() without its coroutine, for the common case: no hedge, no timeout
                try:
                    answered = await attempt(lease, None)
                except TimeoutError:
                    timed_out = rules.timeout_error("the attempt's time ran out")
                    _attempt_failed(plan, lease, timed_out)
                    raise timed_out from None
                except BaseException as failed:
                    _attempt_failed(plan, lease, failed)
                    raise
                result = _attempt_answered(plan, rules, lease, answered)
        except Exception as error:
            failure = error
    call = _verdict(plan, rules, result, failure)
    if call is None:
        assert result is not None
        return result
    retrying = tenacity.AsyncRetrying(
        retry=call.retry,
        wait=call.wait,
        stop=call.stop,
        sleep=anyio.sleep,
        reraise=True,
    )
    try:
        await anyio.sleep(plan.backoff())  # tenacity waits only between its own tries
        return await retrying(_next_attempt, call, attempt, discard)
    except tenacity.RetryError as stopped:  # out of time with a response in hand
        answer: R = stopped.last_attempt.result()
        return answer
    except BaseException:
        if call.result is not None:  # cancelled in a backoff: let it go
            with anyio.CancelScope(shield=True):
                await discard(call.result)
            call.result = None
        raise


async def _next_attempt(
    call: _Call[R],
    attempt: Callable[[Lease, float | None], Awaitable[R]],
    discard: Callable[[R], Awaitable[None]],
) -> R:
    lease, held = call.advance()
    if lease is None:
        assert held is not None
        return held
    if held is not None:
        await discard(held)
    try:
        call.result = await _attempt(call, attempt, discard, lease)
    except Exception as error:
        call.error = error
        raise
    return call.result


def _attempt(
    call: _Call[R],
    attempt: Callable[[Lease, float | None], Awaitable[R]],
    discard: Callable[[R], Awaitable[None]],
    lease: Lease,
) -> Awaitable[R]:
    delay = call.plan.hedge_delay() if call.rules.hedgeable else None
    if delay is not None:
        return _hedged(call, attempt, discard, lease, delay)
    return _one(call, attempt, lease)


async def _one(
    call: _Call[R], attempt: Callable[[Lease, float | None], Awaitable[R]], lease: Lease
) -> R:
    """One attempt, bounded by the plan's attempt timeout, recorded and, unless
    it answered, settled."""
    plan = call.plan
    timeout = plan.attempt_timeout()
    try:
        if timeout is None:  # the common case: no cancel scope to enter and leave
            result = await attempt(lease, None)
        else:
            with anyio.fail_after(timeout):
                result = await attempt(lease, timeout)
    except TimeoutError:
        error = call.rules.timeout_error("the attempt's time ran out")
        _attempt_failed(plan, lease, error)
        raise error from None
    except BaseException as error:
        _attempt_failed(plan, lease, error)
        raise
    return _attempt_answered(plan, call.rules, lease, result)


async def _hedged(
    call: _Call[R],
    attempt: Callable[[Lease, float | None], Awaitable[R]],
    discard: Callable[[R], Awaitable[None]],
    lease: Lease,
    delay: float,
) -> R:
    """The attempt at ``lease``, and, if it has not answered after ``delay``, a
    hedge at another upstream: the first answer wins, the other is cancelled;
    if both fail, the last error stands."""
    answers: list[R] = []
    errors: list[Exception] = []
    settled = anyio.Event()
    out = 0

    async with anyio.create_task_group() as group:

        async def run(lease: Lease) -> None:
            nonlocal out
            out += 1
            try:
                result = await _one(call, attempt, lease)
            except Exception as error:
                errors.append(error)
            else:
                if answers:  # it lost the race after all
                    with anyio.CancelScope(shield=True):
                        await discard(result)
                else:
                    answers.append(result)
                    group.cancel_scope.cancel()
            finally:
                out -= 1
                if not out:
                    settled.set()

        group.start_soon(run, lease)
        with anyio.move_on_after(delay):
            await settled.wait()
        if not settled.is_set():
            hedge = call.plan.hedge()
            if hedge is not None:
                group.start_soon(run, hedge)
    if answers:
        return answers[0]
    raise errors[-1]


# -- sync ---------------------------------------------------------------------------


def drive(
    plan: AttemptPlan,
    attempt: Callable[[Lease, float | None], R],
    rules: Rules[R],
    discard: Callable[[R], None],
    settled: tuple[R | None, Exception | None] | None = None,
) -> R:
    """The sync twin of ``adrive()`` (no hedges: they need a second thread of
    control; ``attempt`` applies the attempt timeout it is given to its I/O)."""
    result: R | None = None
    failure: Exception | None = None
    if settled is not None:
        result, failure = settled
    else:
        lease = first_lease(plan, rules.queue_timeout)
        try:
            result = _sync_one(plan, rules, attempt, lease)
        except Exception as error:
            failure = error
    call = _verdict(plan, rules, result, failure)
    if call is None:
        assert result is not None
        return result
    retrying = tenacity.Retrying(retry=call.retry, wait=call.wait, stop=call.stop, reraise=True)
    try:
        if wait := plan.backoff():  # tenacity waits only between its own tries
            time.sleep(wait)
        answered: R = retrying(_sync_next_attempt, call, attempt, discard)
        return answered
    except tenacity.RetryError as stopped:  # out of time with a response in hand
        answer: R = stopped.last_attempt.result()
        return answer
    except BaseException:
        if call.result is not None:
            discard(call.result)
            call.result = None
        raise


def _sync_next_attempt(
    call: _Call[R], attempt: Callable[[Lease, float | None], R], discard: Callable[[R], None]
) -> R:
    lease, held = call.advance()
    if lease is None:
        assert held is not None
        return held
    if held is not None:
        discard(held)
    try:
        call.result = _sync_one(call.plan, call.rules, attempt, lease)
    except Exception as error:
        call.error = error
        raise
    return call.result


def _sync_one(
    plan: AttemptPlan, rules: Rules[R], attempt: Callable[[Lease, float | None], R], lease: Lease
) -> R:
    try:
        result = attempt(lease, None if plan.untimed else plan.attempt_timeout())
    except BaseException as error:
        _attempt_failed(plan, lease, error)
        raise
    return _attempt_answered(plan, rules, lease, result)
