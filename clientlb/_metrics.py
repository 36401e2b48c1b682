"""``Metrics``: what the balancer did, for Prometheus and the status page.

One collector may watch several pools, each under a name (a transport's service
names, ``"default"`` for a single pool). Two kinds of figures meet here:

* read from the pools when a page is rendered (``Pool.snapshot()``): the state of
  every upstream as a gauge per state, in flight, requests, failures, the
  latency estimate, panic;
* counted as things happen: each request's attempts, which the shells hand over
  once per request at its end (``observe(plan)``: durations, responses by
  status class, retries, hedges, retries the budget refused), and the pools'
  events (``Pool._watch``: ejections by the rule that ejected, active check
  results, changes of state and of the tier that serves, kept in a short ring
  for the status page);
* read from the proxies when a page is rendered: the client connections open at
  ``clientlb proxy``'s listener and the WebSockets a ``ProxyApp`` relays
  (``Metrics._gauge``).

Nothing here runs per request unless a collector was given (``metrics=``); given,
a request costs one call and a few counter increments under a lock.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import weakref
from bisect import bisect_left as _bucket_of
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._core import AttemptPlan, ConfigError, Health, Pool
from ._core._member import Member
from ._core._pool import CHECK_FAILED, CHECK_PASSED
from ._exposition import Family, number, render

#: prometheus-client's default buckets, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Every state, in the order ``clientlb_upstream_state`` lists them.
STATES = tuple(h.value for h in Health)
#: Latencies kept per upstream for the status page (quantiles and sparkline).
RECENT = 100
#: An upstream whose last failure is among its last this many attempts has a
#: latency estimate that includes failure penalties (``Pool``'s ``failure_penalty``).
PENALTY_WINDOW = 32

_STATE_EVENTS = frozenset(STATES) | {"removed"}


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """One thing that happened to a pool: ``time`` is wall-clock seconds."""

    time: float
    pool: str
    upstream: str  # "" for the pool itself
    event: str  # a state, "removed", or for the pool "serving"
    detail: str  # the ejection rule; for "serving", the tier that serves now


# Attempts without a response that say nothing of the upstream (their own classes).
_NOT_ERRORS = frozenset({"cancelled", "busy"})


class _Upstream:
    """What was counted of one upstream."""

    __slots__ = (
        "buckets",
        "checks",
        "classes",
        "count",
        "ejections",
        "failed_at",
        "recent",
        "seconds",
    )

    def __init__(self, bounds: int) -> None:
        self.buckets = [0] * (bounds + 1)  # per bucket, the last one +Inf
        self.count = 0
        self.seconds = 0.0  # the sum of the counted durations
        self.classes: dict[str, int] = {}
        self.ejections: dict[str, int] = {}
        self.checks = [0, 0]  # passed, failed
        self.recent: deque[float] = deque(maxlen=RECENT)
        self.failed_at = -PENALTY_WINDOW  # attempts seen at the last failure


class _Watched:
    """One watched pool and its counts."""

    __slots__ = (
        "attempts",
        "hedges",
        "name",
        "pool",
        "refused",
        "requests",
        "retries",
        "serving",
        "upstreams",
        "watcher",
    )

    def __init__(self, name: str, pool: Pool) -> None:
        self.name = name
        self.pool = pool
        self.requests = self.attempts = self.retries = self.hedges = self.refused = 0
        self.upstreams: dict[str, _Upstream] = {}
        self.serving = ""
        self.watcher: Callable[[str, Member], None] | None = None


class _Gauge:
    """One of the package's own gauges: ``read(owner)`` is its value for as long
    as ``owner`` lives, labelled with ``pool``'s name when it has one (``name``:
    the last name ``pool`` was seen watched under)."""

    __slots__ = ("family", "name", "owner", "pool", "read")

    def __init__(
        self,
        family: str,
        owner: object,
        read: Callable[[Any], int],
        pool: Pool | None,
        name: str | None,
    ) -> None:
        self.family = family
        self.owner = weakref.ref(owner)
        self.read = read
        self.pool = pool
        self.name = name


class Metrics:
    """A collector of balancing metrics, rendered as Prometheus text.

    Give it to a transport or proxy (``metrics=``; several may share one) and
    read it with ``render()``, mount ``clientlb.admin_app(..., metrics=...)``, or
    register it with a prometheus-client registry (it has ``collect()``).

    **Parameters:**

    * **buckets** - upper bounds, in seconds, of the request duration histogram
      (prometheus-client's defaults).
    * **events** - how many recent pool events to keep for the status page.
    """

    def __init__(self, *, buckets: Sequence[float] = BUCKETS, events: int = 200) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or any(not math.isfinite(b) or b <= 0 for b in bounds):
            raise ValueError(f"buckets are positive finite seconds, got {buckets!r}")
        self.buckets = tuple(bounds)
        self._lock = threading.Lock()
        self._pools: dict[Pool, _Watched] = {}
        self._events: deque[PoolEvent] = deque(maxlen=events)
        self._gauges: list[_Gauge] = []

    # -- what is watched ------------------------------------------------------------

    def watch(self, pool: Pool, name: str = "default") -> str:
        """Count ``pool``'s events under ``name`` and return the name it has: a
        pool watched already keeps its name (so naming it first wins), and a
        name another pool has gets a suffix (``"default-2"``)."""
        with self._lock:
            watched = self._pools.get(pool)
            if watched is not None:
                return watched.name
            taken = {w.name for w in self._pools.values()}
            unique = name
            for n in itertools.count(2):
                if unique not in taken:
                    break
                unique = f"{name}-{n}"
            watched = self._pools[pool] = _Watched(unique, pool)
        watched.watcher = self._watcher(watched)
        with pool._lock:
            watched.serving = pool._serving_tier()
            pool._watch(watched.watcher)
        return unique

    def unwatch(self, pool: Pool) -> None:
        """Stop watching ``pool`` and forget what was counted of it."""
        with self._lock:
            watched = self._pools.pop(pool, None)
        if watched is not None and watched.watcher is not None:
            pool._unwatch(watched.watcher)

    @property
    def pools(self) -> dict[str, Pool]:
        """The watched pools by name."""
        with self._lock:
            return {w.name: w.pool for w in self._pools.values()}

    def _watcher(self, watched: _Watched) -> Callable[[str, Member], None]:
        def on_change(event: str, member: Member) -> None:  # under the pool's lock
            url = member.upstream.url
            if event in (CHECK_PASSED, CHECK_FAILED):
                with self._lock:
                    self._upstream(watched, url).checks[event == CHECK_FAILED] += 1
                return
            if event not in _STATE_EVENTS:
                return
            now = time.time()
            detail = member.ejected_for if event == "ejected" else ""
            serving = watched.pool._serving_tier()
            with self._lock:
                if event == "ejected":
                    counts = self._upstream(watched, url).ejections
                    counts[detail] = counts.get(detail, 0) + 1
                self._events.append(PoolEvent(now, watched.name, url, event, detail))
                if serving != watched.serving:
                    watched.serving = serving
                    self._events.append(PoolEvent(now, watched.name, "", "serving", serving))

        return on_change

    def _upstream(self, watched: _Watched, url: str) -> _Upstream:
        counts = watched.upstreams.get(url)
        if counts is None:
            counts = watched.upstreams[url] = _Upstream(len(self.buckets))
        return counts

    def _gauge(
        self, family: str, owner: object, read: Callable[[Any], int], pool: Pool | None = None
    ) -> None:
        """Report ``read(owner)`` as ``family`` (one of ``GAUGES``) at every render,
        for as long as ``owner`` lives (held weakly: a collector outlives the apps of
        a reload, and the app that a reload replaced still relays its WebSockets).
        Readings under the same labels add up; ``pool`` labels them. A pool no
        longer watched is not reported, unless another pool is watched under its
        name: a reload's new pool, whose name its readings go on under (the
        replaced app's WebSockets stay open until they close)."""
        if family not in GAUGES:
            raise ValueError(f"not one of clientlb's gauges: {family!r}")
        with self._lock:
            watched = self._pools.get(pool) if pool is not None else None
            name = watched.name if watched is not None else None
            self._gauges.append(_Gauge(family, owner, read, pool, name))

    def _read_gauges(self) -> dict[tuple[str, str | None], int]:
        """Every gauge read now, summed by (family, pool name); forgets the gauges
        whose owner is gone."""
        with self._lock:
            gauges = list(self._gauges)
            names = {pool: w.name for pool, w in self._pools.items()}
        successors = set(names.values())
        readings: dict[tuple[str, str | None], int] = {}
        gone = []
        for gauge in gauges:
            owner = gauge.owner()
            if owner is None:
                gone.append(gauge)
                continue
            name = None
            if gauge.pool is not None:
                name = names.get(gauge.pool)
                if name is not None:
                    gauge.name = name
                elif gauge.name in successors:
                    name = gauge.name
                else:
                    continue
            key = (gauge.family, name)
            readings[key] = readings.get(key, 0) + gauge.read(owner)
        if gone:
            with self._lock:
                self._gauges = [g for g in self._gauges if g not in gone]
        return readings

    def gauges(self) -> dict[str, int]:
        """The proxies' gauges now, summed over pools, by short name
        (``client_connections``, ``websockets``): what ``/stats`` shows. Empty
        when nothing reports them."""
        out: dict[str, int] = {}
        for (family, _), value in self._read_gauges().items():
            short = family.removeprefix("clientlb_proxy_")
            out[short] = out.get(short, 0) + value
        return out

    # -- per request ------------------------------------------------------------------

    def observe(self, plan: AttemptPlan) -> None:
        """Count one request once its attempts are over (the shells call this)."""
        watched = self._pools.get(plan.pool)
        if watched is None:
            return
        history = plan.history
        hedges = plan.hedges
        bounds = self.buckets
        with self._lock:
            watched.requests += 1
            watched.attempts += len(history)
            if len(history) > 1 + hedges:
                watched.retries += len(history) - 1 - hedges
            if hedges:
                watched.hedges += hedges
            if plan.refused:
                watched.refused += plan.refused
            for attempt in history:
                counts = watched.upstreams.get(attempt.upstream)
                if counts is None:
                    counts = self._upstream(watched, attempt.upstream)
                status = attempt.status
                if status is not None:
                    kind = _CLASSES[status // 100] if 100 <= status < 600 else "error"
                    elapsed = attempt.elapsed
                    if elapsed is not None:  # a response: its time to headers
                        counts.buckets[_bucket_of(bounds, elapsed)] += 1
                        counts.count += 1
                        counts.seconds += elapsed
                        counts.recent.append(elapsed)
                else:
                    outcome = attempt.outcome
                    kind = outcome if outcome in _NOT_ERRORS else "error"
                classes = counts.classes
                classes[kind] = classes.get(kind, 0) + 1
                if kind == "error" or kind == "5xx":
                    counts.failed_at = sum(classes.values())

    # -- reading ----------------------------------------------------------------------

    def families(self) -> list[Family]:
        """Every metric family, read now (pools first, then the counts)."""
        with self._lock:
            watched = list(self._pools.values())
        snapshots = [(w, w.pool.snapshot()) for w in watched]  # outside our lock
        readings = self._read_gauges()
        with self._lock:
            families = _families(snapshots, self.buckets)
        return families + _gauge_families(readings)

    def render(self) -> str:
        """Every metric family in Prometheus text format (version 0.0.4)."""
        return render(self.families())

    def collect(self) -> Iterator[Any]:
        """The families as prometheus-client metrics, for ``registry.register()``
        (needs the ``prometheus`` extra)."""
        from prometheus_client.core import Metric

        for family in self.families():
            name = family.name.removesuffix("_total") if family.kind == "counter" else family.name
            metric = Metric(name, family.doc, family.kind)
            for suffix, labels, value in family.samples:
                metric.add_sample(family.name + suffix, dict(labels), value)
            yield metric

    def events(self, pools: Sequence[str] | None = None) -> list[PoolEvent]:
        """The recent events, newest first (of the pools named, if given)."""
        with self._lock:
            events = list(self._events)
        events.reverse()
        return events if pools is None else [e for e in events if e.pool in pools]

    def serving(self, pool: Pool) -> str:
        """Which tier of a watched pool serves: see ``Pool._serving_tier``."""
        with pool._lock:
            pool._current()
            return pool._serving_tier()

    def latency(self, pool: Pool) -> dict[str, dict[str, Any]]:
        """Per upstream of ``pool``: its recent response times (seconds, oldest
        first), their p50 and p99, and whether its latency estimate includes
        failure penalties."""
        with self._lock:
            watched = self._pools.get(pool)
            if watched is None:
                return {}
            rows = [
                (url, list(c.recent), sum(c.classes.values()) - c.failed_at)
                for url, c in watched.upstreams.items()
            ]
        out = {}
        for url, recent, since_failure in rows:
            ordered = sorted(recent)
            out[url] = {
                "p50": _quantile(ordered, 0.5),
                "p99": _quantile(ordered, 0.99),
                "recent": [round(x, 6) for x in recent[-40:]],
                "penalized": since_failure < PENALTY_WINDOW,
            }
        return out


def watch_pools(metrics: object, pools: Mapping[str, Pool]) -> Metrics | None:
    """A shell's ``metrics=``, checked, watching the shell's pools by name
    (``object``: a wrong type must reach the check, also when compiled)."""
    if metrics is None:
        return None
    if not isinstance(metrics, Metrics):
        raise ConfigError("metrics", f"expected a clientlb.Metrics or None, got {metrics!r}")
    for name, pool in pools.items():
        metrics.watch(pool, name)
    return metrics


_CLASSES = ("error", "1xx", "2xx", "3xx", "4xx", "5xx")


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: (snapshot key, family, type, help) of the per-upstream figures the pools keep.
_FROM_SNAPSHOT = (
    ("in_flight", "clientlb_upstream_in_flight", "gauge", "Requests in flight to the upstream."),
    ("requests", "clientlb_upstream_requests_total", "counter", "Requests sent to the upstream."),
    ("failures", "clientlb_upstream_failures_total", "counter", "Failed requests to the upstream."),
    (
        "ewma_latency",
        "clientlb_upstream_latency_ewma_seconds",
        "gauge",
        "EWMA of response latency (failures count as at least the failure penalty).",
    ),
)
#: (attribute, family, help) of the per-pool counts.
_PER_POOL = (
    ("requests", "clientlb_requests_total", "Requests whose attempts are over."),
    ("attempts", "clientlb_attempts_total", "Attempts at upstreams (requests, retries, hedges)."),
    ("retries", "clientlb_retries_total", "Attempts after a failed one (failover and retries)."),
    ("hedges", "clientlb_hedges_total", "Hedges: second attempts while the first was out."),
    (
        "refused",
        "clientlb_retry_budget_exhausted_total",
        "Retries and hedges the retry budget refused.",
    ),
)
_DOCS = {
    "state": "The upstream's state: 1 for the state it is in, 0 for the others.",
    "duration": "Time from sending a request to an upstream to its response headers.",
    "responses": "Attempts at the upstream by status class (error: no response).",
    "ejections": "Ejections of the upstream, by the outlier rule that ejected it.",
    "checks": "Active health check results.",
    "panic": "Whether the pool balances over every upstream, healthy or not.",
    "pending": "Requests waiting for a connection slot (max_pending).",
    "rejected": "Requests refused because every upstream was at max_connections.",
}


#: The proxies' own gauges (``Metrics._gauge``), by family, with their help.
GAUGES = {
    "clientlb_proxy_client_connections": "Client connections open at clientlb proxy's listener.",
    "clientlb_proxy_websockets": "WebSockets (and other upgraded connections) relayed now.",
}


def _gauge_families(readings: Mapping[tuple[str, str | None], int]) -> list[Family]:
    """The gauges that something reports, in ``GAUGES`` order, pools sorted."""
    out = []
    for name, doc in GAUGES.items():
        rows = sorted((pool or "", pool, v) for (f, pool), v in readings.items() if f == name)
        if rows:
            family = Family(name, "gauge", doc)
            family.samples += [
                ("", (("pool", pool),) if pool is not None else (), value)
                for _, pool, value in rows
            ]
            out.append(family)
    return out


def _families(
    snapshots: list[tuple[_Watched, dict[str, Any]]], bounds: tuple[float, ...]
) -> list[Family]:
    """The families of ``Metrics.families`` (under the collector's lock)."""
    state = Family("clientlb_upstream_state", "gauge", _DOCS["state"])
    per_upstream = [Family(name, kind, doc) for _, name, kind, doc in _FROM_SNAPSHOT]
    duration = Family("clientlb_upstream_request_duration_seconds", "histogram", _DOCS["duration"])
    responses = Family("clientlb_upstream_responses_total", "counter", _DOCS["responses"])
    ejections = Family("clientlb_upstream_ejections_total", "counter", _DOCS["ejections"])
    checks = Family("clientlb_upstream_health_checks_total", "counter", _DOCS["checks"])
    per_pool = [Family(name, "counter", doc) for _, name, doc in _PER_POOL]
    panic = Family("clientlb_pool_panic", "gauge", _DOCS["panic"])
    pending = Family("clientlb_pool_pending", "gauge", _DOCS["pending"])
    rejected = Family("clientlb_pool_rejected_total", "counter", _DOCS["rejected"])
    les = [_le(b) for b in bounds] + ["+Inf"]
    for watched, snapshot in snapshots:
        pool = ("pool", watched.name)
        rows = snapshot["upstreams"]
        for row in rows:
            labels = (pool, ("tier", row["tier"]), ("upstream", row["url"]))
            now = row["state"]
            state.samples += [
                ("", (pool, ("state", s), labels[1], labels[2]), 1 if s == now else 0)
                for s in STATES
            ]
            for (key, *_), family in zip(_FROM_SNAPSHOT, per_upstream, strict=True):
                value = row.get(key)
                if value is not None:
                    family.samples.append(("", labels, value))
        counted = watched.upstreams
        listed = {row["url"] for row in rows}
        for url in [u for u in counted if u not in listed]:  # gone from the pool
            del counted[url]
        for url, counts in counted.items():
            where = (pool, ("upstream", url))
            if counts.count:
                total = 0
                for le, n in zip(les, counts.buckets, strict=True):
                    total += n
                    duration.samples.append(("_bucket", (("le", le), *where), total))
                duration.samples.append(("_count", where, counts.count))
                duration.samples.append(("_sum", where, counts.seconds))
            responses.samples += [
                ("", (("class", k), *where), n) for k, n in sorted(counts.classes.items())
            ]
            ejections.samples += [
                ("", (pool, ("reason", k), where[1]), n)
                for k, n in sorted(counts.ejections.items())
            ]
            if any(counts.checks):
                checks.samples += [
                    ("", (pool, ("result", "pass"), where[1]), counts.checks[0]),
                    ("", (pool, ("result", "fail"), where[1]), counts.checks[1]),
                ]
        for (attribute, *_), family in zip(_PER_POOL, per_pool, strict=True):
            family.samples.append(("", (pool,), getattr(watched, attribute)))
        panic.samples.append(("", (pool,), int(bool(snapshot["panic"]))))
        pending.samples.append(("", (pool,), snapshot["pending"]))
        rejected.samples.append(("", (pool,), snapshot["rejected"]))
    return [
        state,
        *per_upstream,
        duration,
        responses,
        ejections,
        checks,
        *per_pool,
        panic,
        pending,
        rejected,
    ]


def _le(bound: float) -> str:
    """A bucket bound as prometheus-client writes its ``le`` label."""
    return number(bound)
