"""``hash_on=``: which part of a request the hashing algorithms hash, parsed once.

Every shell takes the same three forms: ``"header:NAME"``, ``"cookie:NAME"`` or
a callable. The strings are parsed and checked here, at construction, so a
request only looks a name up; what a callable receives is the shell's own
request (an ``httpx.Request`` in the transports, the ASGI scope or the WSGI
environ in the proxies), which costs nothing to hand over.

Whether a key is needed at all is decided here too, once for every shell: a
hashing algorithm (``Algorithm.hashes``) without a key source would spread
requests at random, and a key given to an algorithm that never reads it would be
silently ignored; both are a ``ConfigError`` naming ``hash_on``. Standard library
only; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ._core import ConfigError, IpHash, Pool

#: An HTTP token (RFC 9110 5.6.2): what header and cookie names are made of.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class KeyName:
    """A parsed ``"header:NAME"`` or ``"cookie:NAME"`` (``name`` as given)."""

    kind: Literal["header", "cookie"]
    name: str


HashOnOption: TypeAlias = str | Callable[[Any], "str | None"] | None
KeySource: TypeAlias = KeyName | Callable[[Any], "str | None"] | None


def parse_hash_on(value: object) -> KeySource:
    """``hash_on=`` checked: ``None``, a ``KeyName`` or the callable itself."""
    if value is None or isinstance(value, KeyName):
        return value
    if isinstance(value, str):
        kind, sep, name = value.partition(":")
        if not sep or kind not in ("header", "cookie"):
            raise ConfigError(
                "hash_on", f"expected 'header:NAME', 'cookie:NAME' or a callable, got {value!r}"
            )
        if not TOKEN.fullmatch(name):
            raise ConfigError(
                "hash_on", f"{kind} name must be a non-empty HTTP token, got {name!r}"
            )
        return KeyName("header" if kind == "header" else "cookie", name)
    if callable(value):
        return value
    raise ConfigError(
        "hash_on", f"expected 'header:NAME', 'cookie:NAME' or a callable, got {value!r}"
    )


def check_key_need(pools: Mapping[str, Pool], source: KeySource, *, client_address: bool) -> None:
    """Refuse a hashing algorithm with no key and a key no algorithm reads.

    ``client_address``: the shell knows the client's address (the proxies), which
    is ``ip_hash``'s key when no ``hash_on`` is given. ``consistent_hash`` hashes
    a key of the user's, so it always needs ``hash_on``. ``pools`` are named for
    the message (a transport's services)."""
    hashing = {name: pool for name, pool in pools.items() if pool.algorithm.hashes}
    if source is not None:
        if not hashing:
            algorithms = sorted({pool.algorithm.name for pool in pools.values()})
            raise ConfigError(
                "hash_on",
                f"only the hashing algorithms (ip_hash, consistent_hash) use a key; "
                f"{', '.join(algorithms)} would ignore it",
            )
        return
    for name, pool in hashing.items():
        if client_address and isinstance(pool.algorithm, IpHash):
            continue
        where = "" if name == "default" else f" (service {name!r})"
        why = (
            "it hashes a key of yours"
            if client_address
            else "a transport has no client address to hash"
        )
        raise ConfigError(
            "hash_on",
            f"{pool.algorithm.name}{where} needs hash_on= ('header:NAME', 'cookie:NAME' "
            f"or a callable): {why}, and without one requests would spread at random",
        )


def cookie_value(headers: Iterable[str], name: str) -> str | None:
    """The value of cookie ``name`` in ``Cookie`` header values (the first one
    given; ``None`` when absent or empty). Values in double quotes lose them."""
    for header in headers:
        for pair in header.split(";"):
            key, sep, value = pair.partition("=")
            if sep and key.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                return value or None
    return None
