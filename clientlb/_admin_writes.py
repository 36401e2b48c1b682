"""What keeps the admin app safe: a ``Host`` check on every request, and changes
allowed only with a bearer token.

* ``HostGuard`` answers 421 to a request whose ``Host`` is neither a loopback
  name, nor the address the request came to, nor one the user allowed: a page
  on another site whose name was rebound to this address (DNS rebinding) cannot
  read the admin from a browser.
* ``POST /drain?upstream=URL[&timeout=S]``, ``POST /enable?upstream=URL`` and
  ``POST /weight?upstream=URL&weight=W`` (with ``&pool=NAME`` when several pools
  are shown) need ``Authorization: Bearer <token>``, the token being the
  content of ``token_file``, read at each request (so it can be rotated) and
  compared in constant time. Without a token file the admin is read-only and
  they answer 403.

``enable`` brings back an upstream drained here (or still draining), and
``weight`` changes one upstream's weight: both through ``Pool.update()`` with the
pool's other members as they are. Discovery, if the pool has it, has the last
word at its next answer.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ._core import ConfigError, Health, Pool, Upstream

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class HostGuard:
    """Pure ASGI: refuse (421) requests whose ``Host`` this admin is not known by."""

    def __init__(self, app: Any, allowed: tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not self._known(scope):
            response = PlainTextResponse("unknown Host for this admin\n", status_code=421)
            return await response(scope, receive, send)
        await self.app(scope, receive, send)

    def _known(self, scope: Any) -> bool:
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1").lower()
                break
        host = _hostname(host)
        if not host:
            return False
        server = scope.get("server")
        if host in LOOPBACK_NAMES or host in self.allowed:
            return True
        if server and host == str(server[0]).lower():  # the address it came to
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a name neither loopback nor allowed


def _hostname(host: str) -> str:
    """The host of a ``Host`` header value, without port or IPv6 brackets."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Token:
    """The bearer token in a file, read at each check."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.read()  # a missing or empty file is a ConfigError now, not a 403 later

    def read(self) -> bytes:
        try:
            token = self.path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError("token_file", f"cannot read {self.path}: {exc.strerror}") from None
        if not token:
            raise ConfigError("token_file", f"{self.path} is empty")
        return token

    def allows(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        try:
            token = self.read()
        except ConfigError:
            return False
        return hmac.compare_digest(given.strip().encode("latin-1", "replace"), token)


def write_routes(pools: Callable[[], Mapping[str, Pool]], token: Token | None) -> list[Route]:
    """``POST /drain``, ``/enable`` and ``/weight``, guarded by ``token``."""
    drained: dict[tuple[str, str], tuple[Upstream, bool]] = {}  # to enable again

    def guarded(action: Callable[[Request, str, Pool, str], Response]) -> Any:
        async def endpoint(request: Request) -> Response:
            if token is None:
                return _error(403, "read-only admin: give it a token file to allow changes")
            if not token.allows(request):
                return _error(401, "a bearer token is needed", {"www-authenticate": "Bearer"})
            shown = pools()
            name = request.query_params.get("pool") or (
                next(iter(shown)) if len(shown) == 1 else ""
            )
            pool = shown.get(name)
            if pool is None:
                return _error(404, f"no pool named {name!r}; give pool= (one of {sorted(shown)})")
            url = request.query_params.get("upstream", "")
            if not url:
                return _error(400, "give upstream=URL")
            try:
                return action(request, name, pool, url)
            except (ConfigError, ValueError) as exc:
                return _error(400, str(exc))

        return endpoint

    def drain(request: Request, name: str, pool: Pool, url: str) -> Response:
        member = _member(pool, url)
        if member is None:
            return _error(404, f"no upstream {url} in pool {name!r}")
        timeout = request.query_params.get("timeout")
        drained[(name, member.upstream.key)] = (member.upstream, member.tier == "standby")
        pool.drain(member.upstream, None if timeout is None else float(timeout))
        return _done(name, pool, member.upstream)

    def enable(request: Request, name: str, pool: Pool, url: str) -> Response:
        member = _member(pool, url)
        if member is not None and member.health is not Health.DRAINING:
            return _done(name, pool, member.upstream)  # serving already
        key = Upstream(url).key
        if member is not None:
            back = (member.upstream, member.tier == "standby")
        elif (name, key) in drained:
            back = drained[(name, key)]
        else:
            return _error(404, f"no upstream {url} drained in pool {name!r}")
        _update(pool, back[0], back[1])
        drained.pop((name, key), None)
        return _done(name, pool, back[0])

    def weight(request: Request, name: str, pool: Pool, url: str) -> Response:
        member = _member(pool, url)
        if member is None or member.health is Health.DRAINING:
            return _error(404, f"no upstream {url} serving in pool {name!r}")
        new = dataclasses.replace(
            member.upstream, weight=float(request.query_params.get("weight", ""))
        )
        _update(pool, new, member.tier == "standby")
        return _done(name, pool, new)

    return [
        Route(f"/{action.__name__}", guarded(action), methods=["POST"])
        for action in (drain, enable, weight)
    ]


def _member(pool: Pool, url: str) -> Any:
    key = Upstream(url).key
    return next((m for m in pool.members if m.upstream.key == key), None)


def _update(pool: Pool, upstream: Upstream, standby: bool) -> None:
    """``pool``'s membership with ``upstream`` in it (added or replacing its
    namesake), every other member as it is, draining ones left to drain."""
    lists: tuple[list[Upstream], list[Upstream]] = ([], [])
    for m in pool.members:
        if m.health is not Health.DRAINING and m.upstream.key != upstream.key:
            lists[m.tier == "standby"].append(m.upstream)
    lists[standby].append(upstream)
    pool.update(*lists)


def _done(name: str, pool: Pool, upstream: Upstream) -> Response:
    member = _member(pool, upstream.url)
    state = member.state if member is not None else "removed"
    weight = member.weight if member is not None else upstream.weight
    return JSONResponse({"pool": name, "upstream": upstream.url, "state": state, "weight": weight})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
