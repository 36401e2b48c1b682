"""``clientlb proxy`` settings: defaults, a TOML file, then command-line flags.

Every table and key the file may hold is named in ``_schema`` (and documented
from there in ``docs/config.md``); this module turns a parsed file into
``Settings``. Every value is checked for its type and range here, before
anything starts: every problem is a ``ConfigError`` naming the key
(``health.expected``, ``server.backlog``), which the CLI prints as one line
before exiting with status 2. Unknown keys are errors too: a misspelt setting
silently ignored is worse than a refusal to start.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from .._core import (
    ALGORITHMS,
    ConfigError,
    HealthCheck,
    OutlierDetection,
    Pool,
    RetryBudget,
    RetryPolicy,
    StickyCookie,
    Subset,
    Upstream,
)
from .._core._policies import flag, seconds
from .._core._upstream import HOSTNAME
from .._keys import check_key_need, parse_hash_on
from .._tls import tls_context
from ._base import HEADER_NAME
from ._engines import Timeouts
from ._headers import parse_networks
from ._limits import DEFAULT_LIMITS, DEFAULT_WEBSOCKETS, Limits, WebSocketSettings
from ._schema import SCHEMA, SERVER_DEFAULTS, TOP

_SERVER_DEFAULTS = SERVER_DEFAULTS
DEFAULT_OUTLIER = OutlierDetection()
_POOL_KEYS = SCHEMA["pool"].names
#: ``[server] log_level`` (as ``--log-level``).
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
#: ``[server] loop``: the event loop, each with the module it needs.
_LOOPS: dict[str, str | None] = {"auto": None, "asyncio": None, "uvloop": "uvloop", "none": None}
#: The largest listen backlog (the kernel caps it lower anyway).
MAX_BACKLOG = 65535
#: The largest config file read: more is not a config file (``/dev/zero``, a log).
MAX_CONFIG_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything ``clientlb proxy`` runs with, validated."""

    listen: tuple[str, int] = ("127.0.0.1", 8080)
    admin: tuple[str, int] | None = None
    admin_token_file: str | None = None
    upstreams: tuple[Upstream, ...] = ()
    standbys: tuple[Upstream, ...] = ()
    algorithm: str = "round_robin"
    hash_on: str | None = None
    sticky: StickyCookie | None = None
    trusted_proxies: tuple[str, ...] = ()
    preserve_host: bool = False
    retry_body_limit: int = 64 * 1024
    verify: bool | str = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy | None = None
    outlier: OutlierDetection | None = DEFAULT_OUTLIER
    health: HealthCheck | None = None
    pool: dict[str, Any] = field(default_factory=dict)
    subset: Subset | None = None
    server: dict[str, Any] = field(default_factory=lambda: dict(_SERVER_DEFAULTS))
    limits: Limits = DEFAULT_LIMITS
    websockets: WebSocketSettings = DEFAULT_WEBSOCKETS
    # ``--discovery`` URIs and the ``[discovery]`` table: {"uris": [...]}.
    discovery: dict[str, Any] = field(default_factory=dict)

    def pool_options(self) -> dict[str, Any]:
        subset = {"subset": self.subset} if self.subset is not None else {}
        return {"retry": self.retry, "outlier": self.outlier, **subset, **self.pool}


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so that an
    error naming a hostile value (a path, a URL) stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


Entries = tuple[tuple[str, float, int | None], ...]


def upstream_entries(settings: Settings) -> tuple[Entries, Entries]:
    """The upstream lists with each one's weight and limit: ``Upstream``
    equality is by address alone, so settings compare equal across a change of
    weight; compare these too."""

    def entries(ups: tuple[Upstream, ...]) -> Entries:
        return tuple((up.url, up.weight, up.max_connections) for up in ups)

    return entries(settings.upstreams), entries(settings.standbys)


def parse_address(value: object, name: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a pair; port 0 picks a free one."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(name, f"expected HOST:PORT, got {value!r}")
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(name, f"invalid port in {value!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not HOSTNAME.fullmatch(host.lower()):
            raise ConfigError(name, f"invalid host in {value!r}") from None
    return host, int(port)


#: The keys of an upstream table: ``Upstream``'s arguments.
_UPSTREAM_KEYS = SCHEMA["upstreams[]"].names


def _upstream(value: object, name: str) -> Upstream:
    try:
        if isinstance(value, str):
            return Upstream(value)
        if isinstance(value, dict):
            unknown = set(value) - _UPSTREAM_KEYS
            if unknown:
                raise ConfigError(name, f"unknown key {sorted(unknown)[0]!r} in an upstream")
            if "url" not in value:
                raise ConfigError(name, "an upstream table needs a url")
            return Upstream(**value)
    except ConfigError as exc:
        raise ConfigError(name, str(exc)) from None
    raise ConfigError(name, f"expected a URL or {{url, weight, max_connections}}, got {value!r}")


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data[key]`` as a table (a copy: the caller's mapping is left as it was)."""
    value = data.pop(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {value!r}")
    return dict(value)


def _build(cls: Any, values: dict[str, Any], name: str) -> Any:
    """``cls(**values)``, its errors named ``name.key`` (``retry.budget.ratio``).

    TOML has no null, so ``false`` stands for ``None`` where the class takes
    ``None`` to turn a setting off (``consecutive_local_failures = false``)."""
    known = SCHEMA[name].names
    for key in values:
        if key not in known:
            raise ConfigError(f"{name}.{key}", "unknown setting")
    offs = _switchable(cls)
    values = {k: None if v is False and k in offs else v for k, v in values.items()}
    try:
        return cls(**values)
    except ConfigError as exc:
        key = exc.field.rpartition(".")[2]  # RetryBudget says "retry_budget.ratio"
        raise ConfigError(f"{name}.{key}", str(exc).split(": ", 1)[-1]) from None
    except TypeError as exc:
        raise ConfigError(name, str(exc)) from None


def _switchable(cls: Any) -> frozenset[str]:
    """The fields of dataclass ``cls`` that ``None`` turns off: those that take
    ``None`` and are not booleans themselves."""
    if not is_dataclass(cls):
        return frozenset()
    return frozenset(
        f.name
        for f in fields(cls)
        if isinstance(f.type, str) and "None" in f.type and "bool" not in f.type
    )


def _subset(table: dict[str, Any]) -> Subset:
    """``[subset]``: all three keys, each a whole number (named when wrong)."""
    known = SCHEMA["subset"].names
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"subset.{key}", "unknown setting")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"subset.{key}", f"must be a whole number, got {value!r}")
    for key in sorted(known):
        if key not in table:
            raise ConfigError(f"subset.{key}", "is required in [subset]")
    subset: Subset = _build(Subset, table, "subset")
    return subset


def _retry(table: dict[str, Any]) -> RetryPolicy:
    """``[retry]``, with ``budget`` a table of ``RetryBudget``'s fields or ``false``."""
    if "budget" in table:
        budget = table["budget"]
        if budget is False:
            table["budget"] = None
        elif isinstance(budget, dict):
            table["budget"] = _build(RetryBudget, budget, "retry.budget")
        else:
            raise ConfigError("retry.budget", f"expected a table or false, got {budget!r}")
    policy: RetryPolicy = _build(RetryPolicy, table, "retry")
    return policy


def load_file(path: str) -> dict[str, Any]:
    """Read a TOML file into a plain dict (errors name the file)."""
    try:
        with Path(path).open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the path
        raise ConfigError("--config", f"cannot read {path!r}: {exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("--config", f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB")
    try:
        return tomllib.loads(raw.decode())
    except UnicodeDecodeError as exc:
        raise ConfigError("--config", f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigError("--config", f"{path}: values nested too deeply") from None


def build(data: dict[str, Any], base: Settings = Settings()) -> Settings:
    """Settings from a config mapping (as read from TOML, or built from flags)."""
    data = dict(data)
    for key in sorted(data):
        if key not in TOP.names:
            raise ConfigError(key, "unknown setting")
    changes: dict[str, Any] = {}
    if "listen" in data:
        changes["listen"] = parse_address(data.pop("listen"), "listen")
    if "admin" in data:
        admin = data.pop("admin")  # "" or false: no admin listener
        changes["admin"] = None if admin is False or admin == "" else parse_address(admin, "admin")
    if "admin_token_file" in data:
        path = data.pop("admin_token_file")
        if not isinstance(path, str) or not path or "\0" in path:
            raise ConfigError("admin_token_file", f"expected a file path, got {path!r}")
        changes["admin_token_file"] = path
    for key in ("upstreams", "standbys"):
        if key in data:
            values = data.pop(key)
            if not isinstance(values, list):
                raise ConfigError(key, f"expected a list of URLs, got {values!r}")
            changes[key] = tuple(_upstream(v, key) for v in values)
    if "algorithm" in data:
        algorithm = data.pop("algorithm")
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            raise ConfigError(
                "algorithm", f"unknown algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}"
            )
        changes["algorithm"] = algorithm
    if "hash_on" in data:
        value = data.pop("hash_on")
        if not isinstance(value, str):
            raise ConfigError("hash_on", f"expected 'header:NAME' or 'cookie:NAME', got {value!r}")
        parse_hash_on(value)
        changes["hash_on"] = value
    if "sticky" in data:
        changes["sticky"] = _build(StickyCookie, _table(data, "sticky"), "sticky")
    if "trusted_proxies" in data:
        proxies = data.pop("trusted_proxies")
        proxies = [proxies] if isinstance(proxies, str) else proxies
        if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
            raise ConfigError(
                "trusted_proxies", f"expected a list of addresses or networks, got {proxies!r}"
            )
        try:
            parse_networks(proxies)
        except (ValueError, TypeError) as exc:
            raise ConfigError("trusted_proxies", str(exc)) from None
        changes["trusted_proxies"] = tuple(proxies)
    if "preserve_host" in data:
        value = data.pop("preserve_host")
        if not isinstance(value, bool):
            raise ConfigError("preserve_host", f"expected true or false, got {value!r}")
        changes["preserve_host"] = value
    if "retry_body_limit" in data:
        value = data.pop("retry_body_limit")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError("retry_body_limit", f"expected a whole number >= 0, got {value!r}")
        changes["retry_body_limit"] = value
    if "verify" in data:
        value = data.pop("verify")
        if not isinstance(value, bool | str) or value == "" or "\0" in str(value):
            raise ConfigError("verify", f"expected true, false or a CA bundle path, got {value!r}")
        tls_context(value)  # a path that cannot be loaded fails here
        changes["verify"] = value
    if "timeouts" in data:
        values = {**_as_dict(base.timeouts), **_table(data, "timeouts")}
        changes["timeouts"] = _timeouts(values)
    if "retry" in data:
        changes["retry"] = _retry(_table(data, "retry"))
    if "outlier" in data:
        changes["outlier"] = _build(OutlierDetection, _table(data, "outlier"), "outlier")
    if "health" in data:
        changes["health"] = _build(HealthCheck, _table(data, "health"), "health")
    if "pool" in data:
        changes["pool"] = _pool(_table(data, "pool"))
    if "subset" in data:
        changes["subset"] = _subset(_table(data, "subset"))
    if "limits" in data:
        changes["limits"] = _build(Limits, _table(data, "limits"), "limits")
    if "websockets" in data:
        changes["websockets"] = _build(WebSocketSettings, _table(data, "websockets"), "websockets")
    if "server" in data:
        table = _table(data, "server")
        changes["server"] = {**base.server, **{k: _server(k, v) for k, v in table.items()}}
    if "discovery" in data:
        changes["discovery"] = _discovery(_table(data, "discovery"))
    if data:
        raise ConfigError(sorted(data)[0], "unknown setting")
    return replace(base, **changes)


def _pool(table: dict[str, Any]) -> dict[str, Any]:
    """``[pool]``: checked by the ``Pool`` they will be given to."""
    for key in table:
        if key not in _POOL_KEYS:
            raise ConfigError(f"pool.{key}", "unknown setting")
    try:
        Pool(allow_empty=True, **table)
    except ConfigError as exc:
        raise ConfigError(f"pool.{exc.field}", str(exc).split(": ", 1)[-1]) from None
    return table


def _choice(name: str, value: object, options: Mapping[str, str | None]) -> str:
    """One of ``options`` (any case), whose module, if it names one, is installed."""
    if not isinstance(value, str) or value.lower() not in options:
        raise ConfigError(name, f"expected one of {', '.join(options)}, got {value!r}")
    value = value.lower()
    module = options[value]
    if module is not None and importlib.util.find_spec(module) is None:
        raise ConfigError(name, f"{value!r} needs the {module} package, which is not installed")
    return value


def _graceful_shutdown(name: str, value: Any) -> float:
    seconds(name, value)
    return float(value)


def _flag(name: str, value: object) -> bool:
    flag(name, value)
    return bool(value)


def _header_name(name: str, value: object) -> str:
    if not isinstance(value, str) or (value and not HEADER_NAME.fullmatch(value)):
        raise ConfigError(name, f"expected a header name such as X-Upstream, got {value!r}")
    return value


def _backlog(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BACKLOG:
        raise ConfigError(name, f"expected a whole number from 1 to {MAX_BACKLOG}, got {value!r}")
    return value


#: ``[server]``: how each key is checked (and normalised), keyed as the defaults.
_SERVER_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "graceful_shutdown": _graceful_shutdown,
    "log_level": lambda name, value: _choice(name, value, dict.fromkeys(LOG_LEVELS)),
    "access_log": _flag,
    "decision_header": _header_name,
    "loop": lambda name, value: _choice(name, value, _LOOPS),
    "backlog": _backlog,
    "gc_freeze": _flag,
}


def _server(key: str, value: object) -> Any:
    check = _SERVER_CHECKS.get(key) if key in SCHEMA["server"].names else None
    if key == "http":
        raise ConfigError(
            "server.http", "no longer a setting: the proxy serves HTTP/1.1 with its own front end"
        )
    if check is None:
        raise ConfigError(f"server.{key}", "unknown setting")
    return check(f"server.{key}", value)


def _discovery(table: dict[str, Any]) -> dict[str, Any]:
    """``[discovery]``: ``uris``, a list of dns://, etcd:// or file:// URIs."""
    uris = table.pop("uris", [])
    for key in sorted(table):
        if key not in SCHEMA["discovery"].names:
            raise ConfigError(f"discovery.{key}", "unknown setting")
    if isinstance(uris, str):
        uris = [uris]
    if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
        raise ConfigError("discovery.uris", f"expected a list of URIs, got {uris!r}")
    for uri in uris:  # urlsplit would drop tabs and newlines silently
        if any(not c.isprintable() for c in uri):
            raise ConfigError("discovery.uris", f"control character in {uri!r}")
    return {"uris": uris}


def discovery_providers(settings: Settings) -> list[Any]:
    """The discovery providers the settings name (built, so checked)."""
    from ..discovery import from_uri

    providers = []
    for uri in settings.discovery.get("uris", []):
        try:
            providers.append(from_uri(uri))
        except ImportError as exc:
            raise ConfigError("discovery", str(exc)) from None
    return providers


def _as_dict(timeouts: Timeouts) -> dict[str, Any]:
    return {f.name: getattr(timeouts, f.name) for f in fields(timeouts)}


def _timeouts(values: dict[str, Any]) -> Timeouts:
    known = SCHEMA["timeouts"].names
    for key in values:
        if key not in known:
            raise ConfigError(f"timeouts.{key}", "unknown setting")
    values = {k: None if v is False else v for k, v in values.items()}  # false: no limit
    for key, value in values.items():
        if value is not None:  # None (false in TOML) waits forever
            seconds(f"timeouts.{key}", value)
    return Timeouts(**values)


def check(settings: Settings) -> Settings:
    """The checks that need the whole picture (after file and flags merged)."""
    if not settings.upstreams and not settings.standbys and not settings.discovery:
        raise ConfigError(
            "--upstream", "give at least one upstream (--upstream URL or upstreams = [...])"
        )
    discovery_providers(settings)
    if settings.admin_token_file is not None:
        from .._admin_writes import Token

        try:
            Token(settings.admin_token_file)
        except ConfigError as exc:
            raise ConfigError("admin_token_file", str(exc).split(": ", 1)[-1]) from None
    hashing = {"default": Pool(algorithm=settings.algorithm, allow_empty=True)}
    try:
        check_key_need(hashing, parse_hash_on(settings.hash_on), client_address=True)
    except ConfigError as exc:
        if settings.hash_on is not None:
            raise
        raise ConfigError(
            "hash_on",
            f"{settings.algorithm} hashes a key of yours: give hash_on = "
            '"header:NAME" or "cookie:NAME" (--hash-on), or use ip_hash',
        ) from exc
    seen: set[str] = set()
    for up in (*settings.upstreams, *settings.standbys):
        if up.key in seen:
            raise ConfigError("upstreams", f"duplicate upstream {up.url}")
        seen.add(up.key)
    return settings
