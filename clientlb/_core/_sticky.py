"""Cookie-insert stickiness (HAProxy's ``cookie SRV insert``, nginx Plus's
``sticky cookie``), sans-IO: the cookie's settings and the map between an
upstream and the opaque token the cookie carries.

A token is the first 16 bytes of HMAC-SHA256(secret, upstream key), base64url:
it names no address, and without the secret nobody can make the token of an
upstream they were not sent to. The map from token back to upstream is built
from the pool's members, again only when the membership changed, so a forged or
stale cookie costs one dictionary lookup. The shells read the cookie, hand the
upstream key to ``Pool.pick(prefer=...)`` (through ``AttemptPlan(pin=...)``), and
add ``set_cookie()`` to a response from another upstream than the cookie named.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import ConfigError
from ._upstream import Upstream

if TYPE_CHECKING:
    from ._pool import Pool

#: An HTTP token (RFC 6265 cookie-name).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A cookie path: printable ASCII without ``;`` (RFC 6265 path-value).
_PATH = re.compile(r"/[\x21-\x3a\x3c-\x7e]*")
#: The shortest secret taken, in bytes.
MIN_SECRET = 16
#: The longest Max-Age, in seconds (a year; browsers cap at 400 days).
MAX_AGE = 365 * 24 * 3600
_TOKEN_LENGTH = 22  # 16 bytes, base64url without padding


@functools.cache
def process_secret() -> bytes:
    """The secret of every sticky cookie without one: random, once per process."""
    return secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class StickyCookie:
    """Pin each client to the upstream that first answered it, with a cookie.

    **Parameters:**

    * **name** - the cookie's name (an HTTP token).
    * **secret** - the key tokens are signed with (at least 16 bytes; a ``str``
      is taken as UTF-8). By default a random secret made once per process: the
      cookies then mean nothing to another process or after a restart, so
      clients there are balanced afresh and pinned again. Give every process
      behind one balancer the same secret for their cookies to agree.
    * **max_age** - whole seconds the browser keeps the cookie; ``None`` (the
      default) for a session cookie.
    * **secure** - add the ``Secure`` attribute (send over HTTPS only).
    * **path** - the cookie's ``Path`` (default ``/``).

    The cookie is always ``HttpOnly`` and ``SameSite=Lax``.
    """

    name: str = "clientlb"
    secret: str | bytes | None = field(default=None, repr=False)
    max_age: int | None = None
    secure: bool = False
    path: str = "/"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOKEN.fullmatch(self.name):
            raise ConfigError("sticky.name", f"must be an HTTP token, got {self.name!r}")
        secret = self.secret
        if secret is not None:
            if not isinstance(secret, str | bytes):
                raise ConfigError("sticky.secret", "must be a str or bytes")
            if len(secret.encode() if isinstance(secret, str) else secret) < MIN_SECRET:
                raise ConfigError("sticky.secret", f"must be at least {MIN_SECRET} bytes long")
        age = self.max_age
        if age is not None and (
            isinstance(age, bool) or not isinstance(age, int) or not 1 <= age <= MAX_AGE
        ):
            raise ConfigError(
                "sticky.max_age", f"must be whole seconds from 1 to {MAX_AGE}, got {age!r}"
            )
        if not isinstance(self.secure, bool):
            raise ConfigError("sticky.secure", f"must be True or False, got {self.secure!r}")
        if not isinstance(self.path, str) or not _PATH.fullmatch(self.path):
            raise ConfigError("sticky.path", f"must be a cookie path from /, got {self.path!r}")

    @property
    def key(self) -> bytes:
        """The secret as bytes (the process's own when none was given)."""
        secret = self.secret
        if secret is None:
            return process_secret()
        return secret.encode() if isinstance(secret, str) else secret


class Pins:
    """The tokens of one pool's upstreams, both ways. Safe to share between
    threads: the maps are replaced whole, never changed in place."""

    def __init__(self, cookie: StickyCookie, pool: Pool) -> None:
        self.cookie = cookie
        self._pool = pool
        self._key = cookie.key
        attributes = f"; Path={cookie.path}"
        if cookie.max_age is not None:
            attributes += f"; Max-Age={cookie.max_age}"
        attributes += "; HttpOnly; SameSite=Lax"
        if cookie.secure:
            attributes += "; Secure"
        self._attributes = attributes
        self._tokens: dict[str, str] = {}  # upstream key -> token
        self._keys: dict[str, str] = {}  # token -> upstream key
        self._generation = -1

    def token(self, upstream: Upstream) -> str:
        """The token naming ``upstream``."""
        token = self._tokens.get(upstream.key)
        if token is None:
            self._refresh()
            token = self._tokens.get(upstream.key) or self._sign(upstream.key)
        return token

    def pinned(self, token: str | None) -> str | None:
        """The upstream key ``token`` names; ``None`` for no token or a garbage
        or forged one. An upstream that left the pool may keep its token until
        the next membership change: ``Pool.pick(prefer=...)`` then finds no such
        member and picks as usual."""
        if token is None or len(token) != _TOKEN_LENGTH:
            return None
        key = self._keys.get(token)
        if key is None and self._pool._roster.generation != self._generation:
            self._refresh()
            key = self._keys.get(token)
        return key

    def set_cookie(self, token: str) -> str:
        """The ``Set-Cookie`` value that pins a client to ``token``'s upstream."""
        return f"{self.cookie.name}={token}{self._attributes}"

    def _sign(self, key: str) -> str:
        digest = hmac.new(self._key, key.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def _refresh(self) -> None:
        """Rebuild both maps from the pool's members (once per membership change)."""
        generation, keys = self._pool._member_keys()
        if generation == self._generation:
            return
        tokens = {key: self._tokens.get(key) or self._sign(key) for key in keys}
        self._tokens = tokens
        self._keys = {token: key for key, token in tokens.items()}
        self._generation = generation
