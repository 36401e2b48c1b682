"""SIGHUP for ``clientlb proxy``: read the file again and switch to it without
dropping a connection or a request in flight (nginx's ``-s reload``).

``plan()`` decides, from the old and the new settings alone, what the reload
does; what each key allows is the schema's (``_schema``: live, new
connections, new pool, restart). ``Reloader`` carries the plan out in the task
that serves, since a pool's background work must start and stop in one task:

* a new ``ProxyApp`` takes every request from now on (the front ends read
  their app per request, so keep-alive connections move too); requests in
  flight finish on the app, and the pool, they started with;
* the upstream lists change the running pool (``Pool.update()``: survivors keep
  their state, removed upstreams drain), unless an option of the pool changed,
  which builds a new pool;
* the engine, and so the upstream connections it keeps, passes from app to app;
* restart-only keys keep their running values, and one warning names them.

A file that fails to load or check changes nothing and leaves one warning.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .._core import ConfigError
from ._asgi import ProxyApp
from ._config import Settings, one_line, upstream_entries
from ._schema import NEW_POOL, RESTART, TOP, every_key, reload_of

log = logging.getLogger("clientlb.proxy")


@dataclass(frozen=True)
class Plan:
    """What a reload does: the settings to run, the keys whose new value waits
    for a restart, whether a new pool is built, and whether the upstream lists
    changed."""

    settings: Settings
    restart: tuple[str, ...]
    new_pool: bool
    membership: bool


def _get(settings: Settings, dotted: str) -> Any:
    table, _, key = dotted.rpartition(".")
    if not table:
        return getattr(settings, key)
    holder = getattr(settings, table)
    return holder.get(key) if isinstance(holder, dict) else getattr(holder, key)


def _keep(settings: Settings, dotted: str, value: Any) -> Settings:
    """``settings`` with ``dotted`` (``key`` or ``table.key``) set to ``value``."""
    table, _, key = dotted.rpartition(".")
    changes: dict[str, Any] = {key: value}
    if table:
        holder = getattr(settings, table)
        if isinstance(holder, dict):
            changes = {table: {**holder, key: value}}
        else:
            changes = {table: replace(holder, **changes)}
    return replace(settings, **changes)


#: The keys a reload cannot change (listen addresses, event loop, engine).
RESTART_KEYS = tuple(
    f"{t.name}.{k.name}" if t.name else k.name
    for t, k in every_key()
    if t.name != "upstreams[]" and reload_of(f"{t.name}.{k.name}") == RESTART
)
#: The top-level keys whose change builds a new pool.
POOL_KEYS = tuple(k.name for k in TOP.keys if k.reload == NEW_POOL)


def plan(old: Settings, new: Settings) -> Plan:
    """What reloading from ``old`` to ``new`` does (no I/O)."""
    restart = tuple(key for key in RESTART_KEYS if _get(old, key) != _get(new, key))
    settings = new
    for key in restart:
        settings = _keep(settings, key, _get(old, key))
    return Plan(
        settings,
        restart,
        new_pool=any(getattr(old, key) != getattr(new, key) for key in POOL_KEYS),
        membership=upstream_entries(old) != upstream_entries(new),
    )


class Reloader:
    """The running app and settings of ``clientlb proxy``, and how to change them.

    ``load`` reads the file and applies the flags again; ``switch`` makes an app
    serve (the front ends' ``use``); ``build`` makes the app for new settings
    around an engine and, when given, a pool to keep."""

    def __init__(
        self,
        settings: Settings,
        app: ProxyApp,
        load: Callable[[], Settings],
        build: Callable[..., ProxyApp],
        switch: Callable[[Settings, ProxyApp, bool], None],
    ) -> None:
        self.settings = settings
        self.app = app
        self._load = load
        self._build = build
        self._switch = switch
        # Apps replaced by a reload, alive while requests they serve still run.
        self.retired: weakref.WeakSet[ProxyApp] = weakref.WeakSet()

    async def reload(self) -> bool:
        """Switch to the file as it is now; whether anything changed."""
        try:
            new = self._load()
        except ConfigError as exc:
            log.warning("reload failed, still running the previous config: %s", one_line(str(exc)))
            return False
        if new == self.settings and upstream_entries(new) == upstream_entries(self.settings):
            log.info("reload: the config is unchanged")
            return False
        change = plan(self.settings, new)
        if change.restart:
            log.warning(
                "reload: %s changed, which takes a restart; still running the previous value",
                ", ".join(change.restart),
            )
        settings, old = change.settings, self.app
        keep = None if change.new_pool else old.pool
        try:
            app = self._build(settings, engine=old.engine, pool=keep)
            if keep is not None and change.membership and not settings.discovery.get("uris"):
                keep.update(settings.upstreams, settings.standbys)
        except ConfigError as exc:
            log.warning("reload failed, still running the previous config: %s", one_line(str(exc)))
            return False
        await old.stop_background()  # a kept pool is then claimed by the new app
        self._switch(settings, app, change.new_pool)
        self.settings, self.app = settings, app
        self.retired.add(old)
        await app.startup()
        logging.getLogger().setLevel(settings.server["log_level"].upper())
        log.info(
            "reloaded the config: %d upstreams, %d standbys, algorithm %s%s",
            len(settings.upstreams),
            len(settings.standbys),
            settings.algorithm,
            " (a new pool)" if change.new_pool else "",
        )
        return True

    async def shutdown(self) -> None:
        """End the retired apps' WebSockets, then the running app (engine included)."""
        from ._websocket import close_websockets

        for app in list(self.retired):
            await close_websockets(app)
        await self.app.shutdown()
