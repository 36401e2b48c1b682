"""Providers from URIs, as ``clientlb proxy --discovery`` and config files give them.

* ``dns://NAME[:PORT][?srv=1&nameserver=HOST:PORT&scheme=https]``
* ``etcd://HOST:PORT/PREFIX`` (the key prefix keeps its leading slash)
* ``file://PATH`` (``file:///abs/path`` or ``file://relative/path``)
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from .._core import ConfigError
from ._base import Provider
from ._dns import DNS
from ._etcd import Etcd
from ._file import File

FIELD = "discovery"
_TRUE = {"1", "true", "yes", "on"}


def from_uri(uri: str, field: str = FIELD) -> Provider:
    """The provider a discovery URI describes; ``ConfigError`` naming ``field``."""
    if not isinstance(uri, str) or "://" not in uri:
        raise ConfigError(field, f"expected dns://, etcd:// or file:// URI, got {uri!r}")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(field, f"invalid URI {uri!r}: {exc}") from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    scheme = parts.scheme.lower()
    try:
        if scheme == "dns":
            if not parts.hostname:
                raise ConfigError(field, f"missing DNS name in {uri!r}")
            unknown = set(query) - {"srv", "nameserver", "scheme"}
            if unknown:
                raise ConfigError(field, f"unknown option {sorted(unknown)[0]!r} in {uri!r}")
            return DNS(
                parts.hostname,
                port,
                srv=query.get("srv", "").lower() in _TRUE,
                nameserver=query.get("nameserver"),
                scheme=query.get("scheme", "http"),
            )
        if scheme == "etcd":
            if not parts.hostname or port is None:
                raise ConfigError(field, f"expected etcd://HOST:PORT/PREFIX, got {uri!r}")
            if not parts.path.strip("/"):
                raise ConfigError(field, f"missing key prefix in {uri!r}")
            return Etcd(f"http://{parts.netloc}", parts.path)
        if scheme == "file":
            path = parts.netloc + parts.path
            if not path:
                raise ConfigError(field, f"missing path in {uri!r}")
            return File(path)
    except ConfigError as exc:
        if exc.field == field:
            raise
        raise ConfigError(field, f"{uri}: {exc}") from None
    raise ConfigError(field, f"unknown discovery scheme {scheme!r} in {uri!r}")
