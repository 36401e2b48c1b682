"""``Etcd``: endpoints stored as keys under a prefix, read and then watched.

It speaks etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/watch``; keys and values
base64-encoded) with httpx, so it needs no etcd client library. ``EtcdView`` holds
the decisions and no I/O: the requests to send, what a range answer or a watch
message means, which keys are valid. Each session is a range (the full set and
its revision) followed by a watch from the next revision; when the watch breaks,
the next session starts over with a range, so nothing is missed. A key whose
lease expires is deleted by etcd, and the watch removes its endpoint.

The async driver decodes the range answer and each watch message in a worker
thread (with 10,000 keys a range answer is megabytes of base64 and JSON), and
applies the result with ``Feed.apublish``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import socket
import threading
from collections.abc import AsyncGenerator, Sequence
from typing import Any, cast

import anyio.to_thread

from .._core import ConfigError
from .._core._turns import taking_turns
from .._httpx import httpx
from ._base import Endpoints, Feed, InvalidAnswer, Provider, parse_entry, positive

log = logging.getLogger("clientlb.discovery")


class Resync(Exception):
    """The watched revision was compacted: range again at once."""


class WatchFailed(Exception):
    """etcd ended the watch with an error (shutting down, no leader, ...)."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The end of the key range holding every key that starts with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\x00"  # every key
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _revision(body: dict[str, Any]) -> int:
    header = body.get("header")
    if not isinstance(header, dict):
        raise InvalidAnswer("no header in etcd's answer")
    try:
        return int(header.get("revision", 0))
    except (TypeError, ValueError):
        raise InvalidAnswer(f"bad revision in {header!r}") from None


class EtcdView:
    """The endpoints under one prefix, as etcd last told them (no I/O)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.revision = 0
        self.entries: dict[bytes, Any] = {}  # key -> (Upstream, standby)
        self.bad: set[bytes] = set()

    def range_request(self) -> dict[str, str]:
        return {"key": _b64(self.prefix), "range_end": _b64(prefix_end(self.prefix))}

    def watch_request(self) -> dict[str, Any]:
        create = {**self.range_request(), "start_revision": str(self.revision + 1)}
        return {"create_request": create}

    def endpoints(self) -> Endpoints:
        """The current set; of keys giving the same URL the first in key order
        counts (and a primary beats a standby), as ``Endpoints.of`` says."""
        ordered = sorted(self.entries.items())
        return Endpoints.of(
            (entry for _, entry in ordered), [key.decode(errors="replace") for key, _ in ordered]
        )

    def load(self, body: object) -> None:
        """A ``/v3/kv/range`` answer: the whole set."""
        if not isinstance(body, dict):
            raise InvalidAnswer(f"expected a JSON object from etcd, got {body!r:.80}")
        revision = _revision(body)
        kvs = body.get("kvs", [])
        if not isinstance(kvs, list):
            raise InvalidAnswer("kvs is not a list")
        previous, self.entries = self.entries, {}
        seen = set()
        for kv in taking_turns(kvs):
            key = self._key(kv)
            seen.add(key)
            self._put(key, kv, previous.get(key))
        self.bad &= seen
        self.revision = revision

    def apply(self, message: object) -> bool:
        """One ``/v3/watch`` message; whether the endpoints changed."""
        if not isinstance(message, dict):
            raise InvalidAnswer(f"expected a JSON object from the watch, got {message!r:.80}")
        if "error" in message:
            raise WatchFailed(f"{message['error']!r:.200}")
        result = message.get("result")
        if not isinstance(result, dict):
            raise InvalidAnswer(f"no result in watch message {message!r:.80}")
        if str(result.get("compact_revision", "0")) != "0":
            raise Resync("the watched revision was compacted")
        if result.get("canceled"):
            raise WatchFailed(f"watch cancelled: {result.get('cancel_reason', '')!r}")
        changed = False
        events = result.get("events", [])
        for event in events if isinstance(events, list) else ():
            kv = event.get("kv") if isinstance(event, dict) else None
            key = self._key(kv)
            if event.get("type") == "DELETE":
                changed = self.entries.pop(key, None) is not None or changed
                self.bad.discard(key)
            else:
                before = self.entries.get(key)
                self._put(key, kv, before)
                changed = changed or self.entries.get(key) != before
        self.revision = max(self.revision, _revision(result))
        return changed

    def _key(self, kv: object) -> bytes:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise InvalidAnswer(f"bad key-value in etcd's answer: {kv!r:.80}")
        try:
            return base64.b64decode(kv["key"], validate=True)
        except binascii.Error:
            raise InvalidAnswer(f"bad key encoding: {kv['key']!r:.80}") from None

    def _put(self, key: bytes, kv: Any, previous: Any) -> None:
        """Parse one value; a bad value keeps the key's last good one (if any)."""
        name = key.decode(errors="replace")
        try:
            raw = base64.b64decode(kv.get("value", ""), validate=True).decode()
            value = json.loads(raw) if raw.lstrip().startswith(("{", '"')) else raw.strip()
            self.entries[key] = parse_entry(value, name)
        except (InvalidAnswer, ValueError, TypeError, binascii.Error) as exc:
            if key not in self.bad:
                log.warning("etcd key %s: unusable value (%s); ignoring it", name, exc)
                self.bad.add(key)
            if previous is not None:
                self.entries[key] = previous
            return
        if key in self.bad:
            log.info("etcd key %s: valid again", name)
            self.bad.discard(key)


class Etcd(Provider):
    """Endpoints from etcd: every key under ``prefix`` is one endpoint, its value
    ``{"url": ..., "weight": 1, "tier": "primary" | "standby", "max_connections": 100}``
    (all but the url optional; or a bare URL).

    **Parameters:**

    * **endpoint** - etcd's client URL (``http://127.0.0.1:2379``), or several:
      the next one is tried after a failure.
    * **prefix** - the key prefix, e.g. ``/services/users/``.
    * **timeout** - seconds for connecting and for a range request.
    * **watch_timeout** - seconds a quiet watch is kept before it is renewed.

    Keys whose values give the same URL give one upstream: the first key in key
    order decides its weight, unless a later key makes it a primary where the
    first made it a standby. The set is applied, and a warning names the keys.

    Needs etcd 3.4 or later (earlier versions serve the JSON API under another path).
    """

    def __init__(
        self,
        endpoint: str | Sequence[str],
        prefix: str,
        *,
        timeout: float = 5.0,
        watch_timeout: float = 60.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        for url in endpoints:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ConfigError("endpoint", f"must be an http(s) URL, got {url!r}")
        if not endpoints:
            raise ConfigError("endpoint", "at least one etcd URL is needed")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("prefix", f"must be a non-empty string, got {prefix!r}")
        self.endpoints = [url.rstrip("/") for url in endpoints]
        self.prefix = prefix
        self.timeout = positive("timeout", timeout)
        self.watch_timeout = positive("watch_timeout", watch_timeout)
        self._turn = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Etcd({self.endpoints[0]!r}, {self.prefix!r})"

    def _base(self, feed: Feed) -> str:
        if feed.failures:  # rotate through the endpoints while they fail
            self._turn = (self._turn + 1) % len(self.endpoints)
        return self.endpoints[self._turn]

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=self.watch_timeout)

    @staticmethod
    def _json(response: httpx.Response) -> object:
        response.raise_for_status()
        try:
            return response.json()
        except ValueError as exc:
            raise InvalidAnswer(f"not JSON: {exc}") from None

    def _loaded(self, view: EtcdView, response: httpx.Response) -> Endpoints:
        view.load(self._json(response))
        return view.endpoints()

    @staticmethod
    def _watched(view: EtcdView, line: str) -> Endpoints | None:
        """The endpoints after one watch message, or ``None`` if they did not change."""
        if line.strip() and view.apply(_loads(line)):
            return view.endpoints()
        return None

    # -- sync driver ----------------------------------------------------------------

    def poll(self, feed: Feed, stop: threading.Event) -> float:
        base, view = self._base(feed), EtcdView(self.prefix)
        with httpx.Client(timeout=self._timeout()) as client:
            answer = client.post(f"{base}/v3/kv/range", json=view.range_request())
            feed.publish(self._loaded(view, answer))
            watch = client.stream("POST", f"{base}/v3/watch", json=view.watch_request())
            with watch as response:
                response.raise_for_status()
                stream = response.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                with self._lock:
                    if sock is not None:
                        self._sockets.add(sock)
                try:
                    if not stop.is_set():
                        for line in response.iter_lines():
                            endpoints = self._watched(view, line)
                            if endpoints is not None:
                                feed.publish(endpoints)
                except httpx.ReadTimeout:
                    return 0.0  # a quiet watch: renew it
                except Resync as exc:
                    log.info("%r: %s; reading the whole set again", self, exc)
                    return 0.0
                finally:
                    with self._lock:
                        self._sockets.discard(sock)
        if stop.is_set():
            return 0.0
        raise httpx.RemoteProtocolError("etcd closed the watch")

    def interrupt(self) -> None:
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    # -- async driver ---------------------------------------------------------------

    async def apoll(self, feed: Feed) -> float:
        base, view = self._base(feed), EtcdView(self.prefix)
        async with httpx.AsyncClient(timeout=self._timeout()) as client:
            answer = await client.post(f"{base}/v3/kv/range", json=view.range_request())
            await feed.apublish(await anyio.to_thread.run_sync(self._loaded, view, answer))
            watch = client.stream("POST", f"{base}/v3/watch", json=view.watch_request())
            async with watch as response:
                response.raise_for_status()
                try:
                    lines = cast(AsyncGenerator[str, None], response.aiter_lines())
                    async with contextlib.aclosing(lines):
                        async for line in lines:
                            if not line.strip():
                                continue
                            endpoints = await anyio.to_thread.run_sync(self._watched, view, line)
                            if endpoints is not None:
                                await feed.apublish(endpoints)
                except httpx.ReadTimeout:
                    return 0.0
                except Resync as exc:
                    log.info("%r: %s; reading the whole set again", self, exc)
                    return 0.0
        raise httpx.RemoteProtocolError("etcd closed the watch")


def _loads(line: str) -> object:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise InvalidAnswer(f"watch message is not JSON: {exc}") from None
