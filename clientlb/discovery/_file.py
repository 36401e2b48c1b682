"""``File``: endpoints from a TOML or JSON file, re-read when it changes.

The file is polled: its size, modification time and inode are compared with the
last read, and read again when they differ (or when it was modified too recently
for the timestamp to tell two writes apart); a content hash then skips a rewrite
that changed nothing, and a rewrite into the content last rejected (whose error is
raised again without parsing). Reading and parsing are shared by both drivers; the
async one runs them in a worker thread (a file of 10,000 upstreams takes 0.1-0.3 s
to parse) and applies the answer with ``Feed.apublish``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import anyio.to_thread

from .._core import ConfigError
from .._core._turns import taking_turns
from ._base import Endpoints, Feed, InvalidAnswer, Provider, parse_entry, positive

#: A file modified this recently is read again even when its stat looks unchanged:
#: two writes within one timestamp tick would otherwise look like one.
RACY_WINDOW = 2.0


def parse_document(data: bytes, fmt: str) -> Endpoints:
    """``upstreams = [...]`` and ``standbys = [...]``: URLs or
    ``{url, weight, max_connections}`` tables (TOML) / objects (JSON)."""
    try:
        text = data.decode()
        document = json.loads(text) if fmt == "json" else tomllib.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidAnswer(f"not valid {fmt.upper()}: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidAnswer(f"expected a {fmt.upper()} object at the top")
    unknown = set(document) - {"upstreams", "standbys"}
    if unknown:
        raise InvalidAnswer(f"unknown keys {sorted(unknown)}; expected upstreams, standbys")
    entries, origins = [], []
    for name in ("upstreams", "standbys"):
        values = document.get(name, [])
        if not isinstance(values, list):
            raise InvalidAnswer(f"{name} must be a list")
        for i, value in enumerate(taking_turns(values)):
            if isinstance(value, dict) and "tier" in value:
                raise InvalidAnswer(f"{name}[{i}]: the list gives the tier; drop 'tier'")
            where = f"{name}[{i}]"
            upstream, _ = parse_entry(value, where)
            entries.append((upstream, name == "standbys"))
            origins.append(where)
    return Endpoints.of(entries, origins)


class File(Provider):
    """Endpoints from a file, for example::

        upstreams = ["http://10.0.0.1:8000", { url = "http://10.0.0.2:8000", weight = 2 }]
        standbys = ["http://10.0.9.1:8000"]

    or the same as JSON. Write it atomically (to a temporary file, then rename) so
    that a half-written file is never read; one that is read anyway is rejected and
    the last good set kept until the next change.

    A URL listed twice is used once, with its first entry (and that entry's
    weight); one listed in both ``upstreams`` and ``standbys`` is a primary. The
    file is still applied, and a warning names each such URL and where it appears
    (``upstreams[0], upstreams[3]``).

    **Parameters:**

    * **path** - the file; ``.toml`` or ``.json`` (or give ``format=``).
    * **interval** - seconds between checks for a change.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        interval: float = 1.0,
        format: str | None = None,
        **options: Any,
    ) -> None:
        interval = positive("interval", interval)
        options.setdefault("min_backoff", interval)  # a local file: no need to back off
        options.setdefault("max_backoff", max(interval, options["min_backoff"]))
        super().__init__(**options)
        self.path = Path(path)
        if format is None:
            format = self.path.suffix.lstrip(".").lower()
        if format not in ("toml", "json"):
            raise ConfigError("format", f"must be 'toml' or 'json', got {format!r}")
        self.format = format
        self.interval = interval
        self._stat: tuple[int, int, int] | None = None
        self._digest = b""
        self._rejected: tuple[bytes, str] | None = None  # (digest, why) of the last bad read

    def __repr__(self) -> str:
        return f"File({str(self.path)!r})"

    def read_if_changed(self) -> tuple[bytes, tuple[int, int, int]] | None:
        """The file's bytes and stat if it may have changed since the last good read
        (the stat is taken first, so a write during the read shows next time)."""
        st = os.stat(self.path)
        stat = (st.st_mtime_ns, st.st_size, st.st_ino)
        racy = time.time() - st.st_mtime_ns / 1e9 < RACY_WINDOW
        if stat == self._stat and not racy:
            return None
        data = self.path.read_bytes()
        if _digest(data) == self._digest:
            self._stat = stat
            return None
        return data, stat

    def read(self) -> tuple[Endpoints, bytes, tuple[int, int, int]] | None:
        """The file's endpoints, digest and stat if it changed, else ``None``;
        ``InvalidAnswer`` if it cannot be used. Blocking: a worker thread's work."""
        read = self.read_if_changed()
        if read is None:
            return None
        data, stat = read
        digest = _digest(data)
        if self._rejected is not None and self._rejected[0] == digest:
            raise InvalidAnswer(self._rejected[1])
        try:
            return parse_document(data, self.format), digest, stat
        except InvalidAnswer as exc:
            self._rejected = (digest, str(exc))
            raise

    def _applied(self, feed: Feed, digest: bytes, stat: tuple[int, int, int]) -> float:
        if feed.state == "ok":  # remember only what was applied
            self._stat, self._digest = stat, digest
        return self.interval

    def poll(self, feed: Feed, stop: threading.Event) -> float:
        read = self.read()
        if read is None:
            if feed.state != "ok" and feed.applied is not None:
                feed.publish(feed.applied)  # unchanged and good: the failure is over
            return self.interval
        endpoints, digest, stat = read
        feed.publish(endpoints)
        return self._applied(feed, digest, stat)

    async def apoll(self, feed: Feed) -> float:
        read = await anyio.to_thread.run_sync(self.read)
        if read is None:
            if feed.state != "ok" and feed.applied is not None:
                await feed.apublish(feed.applied)
            return self.interval
        endpoints, digest, stat = read
        await feed.apublish(endpoints)
        return self._applied(feed, digest, stat)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()
