"""Frozen policy values users build: outlier detection and retries."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ._errors import ConfigError
from ._upstream import control_character, path_problem

_QUANTILE = re.compile(r"p([0-9]{1,2}(?:\.[0-9]+)?)")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: The longest duration any setting takes, in seconds (a year): longer ones are
#: mistakes, and past about 292 years thread waits and socket timeouts overflow.
MAX_SECONDS = 365 * 24 * 3600.0
#: The longest retry budget window (Finagle's limit on its TTL): the ledger keeps
#: one slot per second of it and sums them on every retry.
MAX_BUDGET_WINDOW = 60.0


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(name, f"must be a number, got {value!r}")
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(name, f"must be {'>= 0' if zero_ok else '> 0'}, got {value!r}")


def seconds(name: str, value: float, *, zero_ok: bool = False) -> None:
    """A duration: a number of seconds, ``> 0`` (or ``>= 0``), at most ``MAX_SECONDS``."""
    _positive(name, value, zero_ok=zero_ok)
    if value > MAX_SECONDS:
        raise ConfigError(name, f"must be at most {MAX_SECONDS:g} seconds, got {value!r}")


def flag(name: str, value: object) -> None:
    """A boolean: ``True`` or ``False``, not merely truthy."""
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be True or False, got {value!r}")


def _status_range(value: range) -> bool:
    return len(value) > 0 and value.step > 0 and value.start >= 100 and value[-1] <= 599


def _statuses(name: str, value: object) -> frozenset[int] | range:
    """HTTP statuses: a ``range`` (kept) or a collection of ints (a frozenset).

    Entries are checked by the caller; strings, mappings, single numbers and
    unhashable entries are refused here."""
    if isinstance(value, range):
        return value
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ConfigError(name, f"expected a collection of HTTP statuses, got {value!r}")
    try:
        return frozenset(value)
    except TypeError:
        raise ConfigError(name, f"expected a collection of HTTP statuses, got {value!r}") from None


def _is_status(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def _threshold(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a whole number >= 1 or None, got {value!r}")


def _count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive health: when to eject an upstream, and for how long.

    An upstream is ejected after ``consecutive_local_failures`` failures in a row
    where no response arrived (connect error, reset, timeout), after
    ``consecutive_gateway_errors`` responses 502/503/504 in a row, or, when set,
    ``consecutive_5xx`` of any 5xx. The n-th ejection in a row lasts
    ``base_ejection_time * n`` seconds, at most ``max_ejection_time`` (Envoy's rule);
    the count starts over once an upstream has stayed in for ``max_ejection_time``.
    At most ``max_ejected_share`` of a tier is ejected at once (at least one member).
    ``None`` disables a rule.

    Latency outliers (off unless ``latency_factor`` is set): an upstream whose
    latency EWMA is above ``latency_factor`` times the median of its tier (over the
    serving upstreams with a latency estimate, two at least) is ejected under the
    same cap and times. Only upstreams with ``latency_min_samples`` requests finished
    since they were (re-)admitted are judged, and the rule is re-evaluated at most
    every ``latency_interval`` seconds, not per request.

    Fail-back without waiting out the ejection: an upstream ejected while its
    connections were refused (its last attempt could not connect) is probed with
    a bare TCP connect, ``probe_after`` seconds after the ejection and then on a
    backoff that doubles up to ``max_probe_interval``; the first connect that
    succeeds re-admits it (through slow start when that is on), so a restarted
    replica gets traffic back within about ``max_probe_interval`` of listening
    again. Probes cost no user request, and an upstream that still answers
    connections but fails requests (5xx, resets, timeouts) is not probed: it
    waits out its ejection. ``probe_after=None`` turns probing off (Finagle's
    and Linkerd's failure accrual probing is the model).
    """

    consecutive_local_failures: int | None = 5
    consecutive_gateway_errors: int | None = 5
    consecutive_5xx: int | None = None
    base_ejection_time: float = 10.0
    max_ejection_time: float = 300.0
    max_ejected_share: float = 1.0
    latency_factor: float | None = None
    latency_min_samples: int = 20
    latency_interval: float = 1.0
    probe_after: float | None = 0.25
    max_probe_interval: float = 0.5

    def __post_init__(self) -> None:
        _threshold("consecutive_local_failures", self.consecutive_local_failures)
        _threshold("consecutive_gateway_errors", self.consecutive_gateway_errors)
        _threshold("consecutive_5xx", self.consecutive_5xx)
        seconds("base_ejection_time", self.base_ejection_time)
        seconds("max_ejection_time", self.max_ejection_time)
        _positive("max_ejected_share", self.max_ejected_share)
        if self.max_ejected_share > 1:
            raise ConfigError("max_ejected_share", f"must be <= 1, got {self.max_ejected_share}")
        if self.latency_factor is not None:
            _positive("latency_factor", self.latency_factor)
            if self.latency_factor <= 1:
                raise ConfigError("latency_factor", f"must be > 1, got {self.latency_factor}")
        _count("latency_min_samples", self.latency_min_samples)
        seconds("latency_interval", self.latency_interval)
        if self.probe_after is not None:
            seconds("probe_after", self.probe_after)
        seconds("max_probe_interval", self.max_probe_interval)

    def ejection_time(self, count: int) -> float:
        return min(self.base_ejection_time * count, self.max_ejection_time)


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Retries allowed over a sliding ``window``: ``ratio`` of the requests seen in
    it, plus a floor of ``min_per_second`` so that a quiet client can still retry
    (Finagle's defaults: 20 % and 10 per second over 10 s). The window is at most
    60 s, Finagle's limit."""

    ratio: float = 0.2
    min_per_second: float = 10.0
    window: float = 10.0

    def __post_init__(self) -> None:
        _positive("retry_budget.ratio", self.ratio, zero_ok=True)
        _positive("retry_budget.min_per_second", self.min_per_second, zero_ok=True)
        _positive("retry_budget.window", self.window)
        if self.window > MAX_BUDGET_WINDOW:
            raise ConfigError(
                "retry_budget.window", f"must be at most {MAX_BUDGET_WINDOW:g}, got {self.window!r}"
            )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt is tried again on another upstream.

    * A connection that was never established is retried for any method, on each
      upstream at most once (as nginx's ``proxy_next_upstream error``).
    * After the request may have reached an upstream (reset, timeout, or a status in
      ``retry_on_status``), only idempotent methods are retried, at most
      ``max_retries`` times, unless ``retry_non_idempotent`` is set.
    * A body that cannot be sent again (a stream already partly read) is never resent.
    * Every retry, and every hedge, draws on the ``budget``.

    Deadlines (seconds, ``None`` for none):

    * ``timeout`` - the whole call: attempts, backoff, failover and hedges. No
      attempt starts when what is left is less than the picked upstream's
      expected latency; past it the call fails with a timeout.
    * ``per_try_timeout`` - each attempt, until its response head (within what
      is left of ``timeout``).
    * ``hedge_after`` - for idempotent requests, when an attempt has not
      answered after this long (seconds, or a quantile of the pool's recent
      latencies such as ``"p95"``), a second attempt goes to another upstream
      and the first answer wins; the other is cancelled.

    A request can carry its own policy: ``extensions={"clientlb.retry":
    RetryPolicy(timeout=0.5)}`` (httpx), replacing the pool's for that call.
    """

    max_retries: int = 2
    retry_on_status: frozenset[int] = frozenset({502, 503, 504})
    retry_non_idempotent: bool = False
    backoff: float = 0.0
    budget: RetryBudget | None = field(default_factory=RetryBudget)
    timeout: float | None = None
    per_try_timeout: float | None = None
    hedge_after: float | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ConfigError("max_retries", f"must be a whole number, got {self.max_retries!r}")
        if self.max_retries < 0:
            raise ConfigError("max_retries", f"must be >= 0, got {self.max_retries}")
        statuses = _statuses("retry_on_status", self.retry_on_status)
        if isinstance(statuses, range) and statuses and not _status_range(statuses):
            raise ConfigError("retry_on_status", f"not HTTP statuses: {statuses!r}")
        for status in statuses:
            if not _is_status(status):
                raise ConfigError("retry_on_status", f"not an HTTP status: {status!r}")
        object.__setattr__(self, "retry_on_status", frozenset(statuses))
        flag("retry_non_idempotent", self.retry_non_idempotent)
        seconds("backoff", self.backoff, zero_ok=True)
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise ConfigError("budget", f"expected RetryBudget or None, got {self.budget!r}")
        for name in ("timeout", "per_try_timeout"):
            value = getattr(self, name)
            if value is not None:
                seconds(name, value)
        hedge = self.hedge_after
        if isinstance(hedge, str):
            match = _QUANTILE.fullmatch(hedge)
            if match is None or not 0 < float(match[1]) < 100:
                raise ConfigError(
                    "hedge_after", f"expected seconds or a quantile such as 'p95', got {hedge!r}"
                )
        elif hedge is not None:
            seconds("hedge_after", hedge)

    @property
    def hedge_quantile(self) -> float | None:
        """``hedge_after`` as a fraction (0.95 for ``"p95"``), if it is a quantile."""
        if isinstance(self.hedge_after, str):
            return float(self.hedge_after[1:]) / 100
        return None

    def may_resend(self, method: str) -> bool:
        """Whether a request that may have reached an upstream may be sent again."""
        return self.retry_non_idempotent or method.upper() in IDEMPOTENT_METHODS


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active health checks: ``GET path`` on every upstream each ``interval`` seconds.

    A check passes when a response whose status is in ``expected`` arrives within
    ``timeout`` seconds. An upstream is taken out after ``fall`` failed checks in a
    row and put back after ``rise`` passed checks in a row (HAProxy's counting); one
    passing check puts back an upstream that passive detection ejected. The path is
    appended to the upstream's URL, path prefix included, as request paths are.
    """

    path: str = "/health"
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    expected: range | frozenset[int] = range(200, 400)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ConfigError("path", f"must start with '/', got {self.path!r}")
        bad = control_character(self.path)
        problem = f"character {bad!r}" if bad is not None else path_problem(self.path, query=True)
        if problem is not None:
            raise ConfigError("path", f"invalid characters in {self.path!r}: {problem}")
        seconds("interval", self.interval)
        seconds("timeout", self.timeout)
        _count("rise", self.rise)
        _count("fall", self.fall)
        expected = _statuses("expected", self.expected)
        if isinstance(expected, range):
            ok = _status_range(expected)
        else:
            ok = bool(expected) and all(_is_status(s) for s in expected)
        if not ok:
            raise ConfigError("expected", f"must be HTTP statuses 100-599, got {self.expected!r}")
        object.__setattr__(self, "expected", expected)

    def passed(self, status: int) -> bool:
        """Whether a check answered with ``status`` passed."""
        return status in self.expected

    def url(self, base: str) -> str:
        """The check URL for an upstream URL (its path prefix kept)."""
        return base.rstrip("/") + self.path
