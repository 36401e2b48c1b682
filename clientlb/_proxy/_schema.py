"""The schema of ``clientlb proxy``'s TOML file: every table and key, in one place.

The parser (``_config``) refuses any key not named here, ``--print-config``
writes the tables in this order, and ``docs/config.md`` is generated from it
(``scripts/gen_config_docs.py``; a test fails when the file is stale). Each
table names the class it builds, and defaults are read from that class (its
dataclass fields, or ``Pool``'s arguments), never copied here.

Each key also says what a reload (SIGHUP) does with a new value:

* ``LIVE`` - new requests use it; requests in flight finish as they started.
* ``CONNECTIONS`` - client connections accepted after the reload use it.
* ``NEW_POOL`` - a new ``Pool`` is built for new requests; its statistics and
  health start afresh, while requests in flight finish on the old one.
* ``RESTART`` - kept as it was; the reload logs that it needs a restart.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, fields
from typing import Any

from .._core import (
    HealthCheck,
    OutlierDetection,
    Pool,
    RetryBudget,
    RetryPolicy,
    StickyCookie,
    Subset,
    Upstream,
)
from ._engines import Timeouts
from ._limits import Limits, WebSocketSettings

LIVE = "live"
CONNECTIONS = "new connections"
NEW_POOL = "new pool"
RESTART = "restart"

#: ``[server]``: a table with no class of its own, so its defaults live here.
SERVER_DEFAULTS: dict[str, Any] = {
    "graceful_shutdown": 30.0,
    "log_level": "info",
    "access_log": False,
    "decision_header": "",
    "loop": "auto",
    "backlog": 2048,
    "gc_freeze": True,
}
#: What ``[discovery]`` and the settings' fields default to, for the keys with
#: no class to read a default from.
_NO_CLASS_DEFAULTS: dict[str, Any] = {"uris": []}


@dataclass(frozen=True)
class Key:
    """One setting: its TOML type as the docs show it, what it means, and what a
    reload does with a new value."""

    name: str
    type: str
    meaning: str
    reload: str = LIVE


@dataclass(frozen=True)
class Table:
    """One table (``""`` for the top level), the class it builds, its keys.

    ``default()`` reads a key's default from ``source``: a dataclass's fields, a
    callable's keyword arguments, or (no source) ``SERVER_DEFAULTS``."""

    name: str
    builds: str  # what the table becomes, as the reference says it
    meaning: str
    keys: tuple[Key, ...]
    source: Any = None

    @property
    def names(self) -> frozenset[str]:
        return frozenset(key.name for key in self.keys)

    def key(self, name: str) -> Key:
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(name)

    def default(self, name: str) -> Any:
        """The default of key ``name``, from the class (``MISSING`` for none)."""
        source = self.source
        if isinstance(source, _Lazy):
            source = source.get()
        if source is None:
            return SERVER_DEFAULTS.get(name, _NO_CLASS_DEFAULTS.get(name, MISSING))
        if isinstance(source, type) and hasattr(source, "__dataclass_fields__"):
            for f in fields(source):
                if f.name == name:
                    if f.default is not MISSING:
                        return f.default
                    if f.default_factory is not MISSING:
                        return f.default_factory()
                    return MISSING
            raise KeyError(name)
        parameter = inspect.signature(source).parameters[name]
        return MISSING if parameter.default is inspect.Parameter.empty else parameter.default


def _settings() -> Any:
    from ._config import Settings  # the settings dataclass, for the top level's defaults

    return Settings


class _Lazy:
    """A source resolved on first use (the top level's is ``Settings``, which
    lives in the module that imports this one)."""

    def __init__(self, get: Callable[[], Any]) -> None:
        self.get = get


SECONDS = "seconds"
SECONDS_OR_OFF = "seconds (leave out: none)"

TOP = Table(
    "",
    "the proxy's settings",
    "Where to listen, the upstreams, how one is picked, and what is sent to it.",
    (
        Key("listen", "string HOST:PORT", "Where the proxy listens; port 0 picks one.", RESTART),
        Key(
            "admin",
            'string HOST:PORT or false/""',
            "The admin listener (/status, /stats, /metrics); false for none.",
            RESTART,
        ),
        Key(
            "admin_token_file",
            "string path",
            "A file holding the bearer token that allows the admin's POST /drain, "
            "/enable and /weight (read at each request); without it the admin is "
            "read-only.",
            RESTART,
        ),
        Key(
            "upstreams",
            "array of URLs or upstream tables",
            "Primary upstreams; see [Upstream entries](#upstream-entries).",
        ),
        Key(
            "standbys",
            "array of URLs or upstream tables",
            "Standby upstreams, used only while no primary can serve.",
        ),
        Key("algorithm", "string", "The balancing algorithm (names below).", NEW_POOL),
        Key(
            "hash_on",
            "string",
            'The hashing algorithms\' key: "header:NAME" or "cookie:NAME".',
        ),
        Key("sticky", "table", "A sticky cookie; see [`[sticky]`](#sticky)."),
        Key(
            "trusted_proxies",
            "string or array of strings",
            "Addresses or networks whose X-Forwarded-For is believed.",
        ),
        Key("preserve_host", "boolean", "Send the client's Host upstream, not the upstream's."),
        Key(
            "retry_body_limit",
            "integer (bytes)",
            "Request bodies up to this size are held so that a retry can resend them.",
        ),
        Key(
            "verify",
            "boolean or string (path)",
            "How HTTPS upstreams are verified: true, false, or a CA bundle path.",
            RESTART,
        ),
        Key("timeouts", "table", "Upstream timeouts; see [`[timeouts]`](#timeouts)."),
        Key("retry", "table", "Retries and deadlines; see [`[retry]`](#retry).", NEW_POOL),
        Key("outlier", "table", "Passive ejection; see [`[outlier]`](#outlier).", NEW_POOL),
        Key("health", "table", "Active health checks; see [`[health]`](#health).", NEW_POOL),
        Key("pool", "table", "Pool options; see [`[pool]`](#pool).", NEW_POOL),
        Key("subset", "table", "Balance over a subset; see [`[subset]`](#subset).", NEW_POOL),
        Key("limits", "table", "Client and connection limits; see [`[limits]`](#limits)."),
        Key("websockets", "table", "WebSocket relaying; see [`[websockets]`](#websockets)."),
        Key("server", "table", "The process; see [`[server]`](#server)."),
        Key("discovery", "table", "Discovery; see [`[discovery]`](#discovery).", NEW_POOL),
    ),
    _Lazy(_settings),
)

UPSTREAM = Table(
    "upstreams[]",
    "`clientlb.Upstream`",
    "An entry of `upstreams` or `standbys` given as an inline table rather than a URL.",
    (
        Key("url", "string", "scheme://host[:port][/prefix]; http or https (required)."),
        Key("weight", "number", "Share of traffic for the weight-aware algorithms."),
        Key(
            "max_connections",
            "integer",
            "Requests in flight to this upstream at once (else the pool's).",
        ),
    ),
    Upstream,
)

TABLES = (
    Table(
        "sticky",
        "`clientlb.StickyCookie`",
        "Pin each client to the upstream that answered it, with a signed cookie. "
        "Leave the table out for none.",
        (
            Key("name", "string", "The cookie's name (an HTTP token)."),
            Key(
                "secret",
                "string",
                "Signing key, 16+ bytes; leave out for a random one per process.",
            ),
            Key("max_age", "integer (seconds)", "The cookie's Max-Age; leave out for a session."),
            Key("secure", "boolean", "Add the Secure attribute (HTTPS only)."),
            Key("path", "string", "The cookie's Path."),
        ),
        StickyCookie,
    ),
    Table(
        "timeouts",
        "the proxy's upstream timeouts (`ProxyApp(timeout=...)`)",
        "Seconds allowed on the upstream side; false for no limit.",
        (
            Key("connect", SECONDS, "To open a connection to an upstream."),
            Key("read", SECONDS, "Between two reads of an upstream's response."),
            Key("write", SECONDS, "For each write of a request to an upstream."),
            Key("pool", SECONDS, "To wait for a connection when all of an upstream's are busy."),
        ),
        Timeouts,
    ),
    Table(
        "retry",
        "`clientlb.RetryPolicy`",
        "When a failed attempt is tried again on another upstream, and the call's deadlines.",
        (
            Key(
                "max_retries", "integer", "Retries after the first attempt (connect errors aside)."
            ),
            Key(
                "retry_on_status",
                "array of integers",
                "Statuses retried for idempotent methods.",
            ),
            Key(
                "retry_non_idempotent",
                "boolean",
                "Also resend POST and PATCH that may have reached an upstream.",
            ),
            Key("backoff", SECONDS, "Pause before each retry."),
            Key(
                "budget",
                "table or false",
                "A retry budget (its own table), or false for none.",
            ),
            Key("timeout", SECONDS_OR_OFF, "The whole call: attempts, backoff and hedges."),
            Key("per_try_timeout", SECONDS_OR_OFF, "Each attempt, until its response head."),
            Key(
                "hedge_after",
                'seconds or string "pNN"',
                "Send an idempotent request again elsewhere after this long.",
            ),
        ),
        RetryPolicy,
    ),
    Table(
        "retry.budget",
        "`clientlb.RetryBudget`",
        "Retries (and hedges) allowed over a sliding window.",
        (
            Key("ratio", "number", "Share of the requests in the window that may be retried."),
            Key("min_per_second", "number", "Retries allowed per second whatever the ratio."),
            Key("window", SECONDS, "The sliding window (at most 60)."),
        ),
        RetryBudget,
    ),
    Table(
        "outlier",
        "`clientlb.OutlierDetection`",
        "Passive health: when to eject an upstream, for how long, and how it comes back.",
        (
            Key(
                "consecutive_local_failures",
                "integer",
                "Failures in a row with no response (connect, reset, timeout); false: off.",
            ),
            Key(
                "consecutive_gateway_errors",
                "integer",
                "502/503/504 responses in a row; false: off.",
            ),
            Key("consecutive_5xx", "integer", "Any 5xx responses in a row (unset or false: off)."),
            Key("base_ejection_time", SECONDS, "The first ejection; the n-th lasts n times it."),
            Key("max_ejection_time", SECONDS, "The longest ejection."),
            Key("max_ejected_share", "number", "Largest share of a tier ejected at once."),
            Key(
                "latency_factor",
                "number",
                "Eject an upstream this many times slower than the median (unset or false: off).",
            ),
            Key("latency_min_samples", "integer", "Requests before latency is judged."),
            Key("latency_interval", SECONDS, "How often the latency rule is evaluated."),
            Key(
                "probe_after",
                SECONDS,
                "First connect probe of an upstream that refused; false: no probes.",
            ),
            Key("max_probe_interval", SECONDS, "Longest wait between connect probes."),
        ),
        OutlierDetection,
    ),
    Table(
        "health",
        "`clientlb.HealthCheck`",
        "Active health checks: GET path on every upstream each interval. "
        "Leave the table out for none.",
        (
            Key("path", "string", "The path checked, appended to each upstream's URL."),
            Key("interval", SECONDS, "Between two checks of one upstream."),
            Key("timeout", SECONDS, "For one check's response."),
            Key("rise", "integer", "Passed checks in a row that put an upstream back."),
            Key("fall", "integer", "Failed checks in a row that take an upstream out."),
            Key("expected", "array of integers", "Statuses that pass."),
        ),
        HealthCheck,
    ),
    Table(
        "pool",
        "the options of `clientlb.Pool`",
        "The pool's options (its other options have tables of their own).",
        (
            Key("slow_start", SECONDS, "Ramp-up of an added or re-admitted upstream (0: off)."),
            Key("slow_start_min_share", "number", "Weight share a slow start begins at."),
            Key("fail_back_after", SECONDS, "Healthy time before traffic leaves the standbys."),
            Key("failure_penalty", SECONDS, "The least latency a failed attempt counts as."),
            Key("panic_threshold", "number", "Available share under which a tier panics."),
            Key(
                "max_connections",
                "integer",
                "Requests in flight per upstream without its own (unset: no limit).",
            ),
            Key("max_pending", "integer", "Requests that may wait when every upstream is full."),
        ),
        Pool.__init__,
    ),
    Table(
        "subset",
        "`clientlb.Subset`",
        "Balance over a few of the upstreams only, for fleets of many proxies over "
        "many upstreams; every upstream is in as many subsets. Leave the table out "
        "to balance over all of them.",
        (
            Key(
                "size",
                "integer",
                "Upstreams in each subset (rounded up to even out). Upstreams take room by "
                "weight: a subset holds more light ones, and each gets traffic in "
                "proportion to its weight.",
            ),
            Key("client", "integer", "This proxy's index, from 0 (a replica ordinal)."),
            Key("clients", "integer", "How many proxies share the upstreams."),
        ),
        Subset,
    ),
    Table(
        "limits",
        "`clientlb.Limits`",
        "What clients may send, how long they may take, and the connections kept.",
        (
            Key("request_line", "integer (bytes)", "Longest request line (else 414).", CONNECTIONS),
            Key("header_line", "integer (bytes)", "Longest header line (else 431).", CONNECTIONS),
            Key("head", "integer (bytes)", "Largest request head (else 431).", CONNECTIONS),
            Key("header_timeout", SECONDS, "For a whole request head.", CONNECTIONS),
            Key("keepalive_timeout", SECONDS, "Idle time between requests.", CONNECTIONS),
            Key("body_timeout", SECONDS, "Between two reads of a request body.", CONNECTIONS),
            Key("send_timeout", SECONDS, "A response may stay unread this long.", CONNECTIONS),
            Key("client_connections", "integer", "Client connections open at once."),
            Key(
                "upstream_connections",
                "integer",
                "The engine's connections per upstream, busy or idle.",
                RESTART,
            ),
            Key(
                "upstream_idle_timeout",
                SECONDS,
                "An idle upstream connection is kept this long.",
                RESTART,
            ),
        ),
        Limits,
    ),
    Table(
        "websockets",
        "`clientlb.WebSocketSettings`",
        "How WebSockets are relayed.",
        (
            Key("max_message", "integer (bytes)", "Largest message either way (else 1009)."),
            Key("deflate", "boolean", "Let the ends compress messages (permessage-deflate)."),
            Key("max_open", "integer", "WebSockets open at once (else 503)."),
            Key("ping_interval", SECONDS, "Between the proxy's pings to each leg."),
            Key("ping_timeout", SECONDS, "Silence after a ping before the session closes."),
            Key("close_timeout", SECONDS, "For both ends to close at shutdown."),
        ),
        WebSocketSettings,
    ),
    Table(
        "server",
        "settings of the process itself",
        "How the process runs.",
        (
            Key(
                "graceful_shutdown",
                SECONDS,
                "At SIGTERM, how long requests in flight may finish.",
            ),
            Key(
                "log_level",
                "string",
                "critical, error, warning, info or debug (as --log-level).",
            ),
            Key(
                "access_log",
                "boolean",
                'One line per request on the "clientlb.access" logger: where it went and why.',
            ),
            Key(
                "decision_header",
                "string",
                "A response header (X-Upstream) naming the upstream, the reason and the "
                "algorithm; empty: none (it names upstreams to clients).",
            ),
            Key("loop", "string", "auto, asyncio, uvloop or none.", RESTART),
            Key("backlog", "integer", "The listen backlog.", RESTART),
            Key(
                "gc_freeze", "boolean", "Freeze the heap after startup (fewer GC stalls).", RESTART
            ),
        ),
    ),
    Table(
        "discovery",
        "`clientlb.discovery` providers",
        "Keep the upstreams current from a registry (the upstream lists are then only "
        "the starting set).",
        (
            Key(
                "uris",
                "string or array of strings",
                "dns://NAME:PORT, etcd://HOST:PORT/PREFIX or file://PATH.",
                NEW_POOL,
            ),
        ),
    ),
)

#: Every table by name (``""`` is the top level).
SCHEMA: dict[str, Table] = {t.name: t for t in (TOP, UPSTREAM, *TABLES)}


def every_key() -> Iterator[tuple[Table, Key]]:
    """Each table's keys in order, the top level first."""
    for found in SCHEMA.values():
        for key in found.keys:
            yield found, key


def reload_of(dotted: str) -> str:
    """What a reload does with a new value of ``table.key`` (a top-level table's
    keys inherit the table's own rule unless they say otherwise)."""
    name, _, key = dotted.rpartition(".")
    rule = SCHEMA[name].key(key).reload
    top = name.partition(".")[0]
    if rule == LIVE and top in TOP.names:
        return TOP.key(top).reload
    return rule
