"""The client library a pair of balancing transports is built for: httpx, or a
library with its API under another name (its fork httpx2, for
``clientlb.httpx2``).

The transports, their stream wrappers and their errors are written once, against
httpx's API; a ``Library`` holds the classes of one library that they build,
check and raise, so the same shell code serves both. The core knows neither.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ._errors_map import add_library
from ._exceptions import CallFailed
from ._httpx import httpx
from ._routing import Readdress
from ._streams import stream_classes


class Library:
    """What the transports take from ``module`` (httpx or httpx2), with the
    ``NoUpstreamAvailable`` and ``UnknownService`` classes of that library."""

    def __init__(
        self,
        module: ModuleType,
        no_upstream: type[CallFailed],
        unknown_service: Callable[..., Exception],
    ) -> None:
        add_library(module)
        self.module = module
        self.no_upstream = no_upstream
        self.unknown_service = unknown_service
        self.streams = stream_classes(module)
        self.readdress = Readdress(module)
        mod: Any = module  # typed as httpx: the libraries share its API
        self.Response: type[httpx.Response] = mod.Response
        self.ByteStream: type[httpx.ByteStream] = mod.ByteStream
        self.SyncByteStream: type[httpx.SyncByteStream] = mod.SyncByteStream
        self.AsyncByteStream: type[httpx.AsyncByteStream] = mod.AsyncByteStream
        self.TransportError: type[httpx.TransportError] = mod.TransportError
        self.ReadTimeout: type[httpx.ReadTimeout] = mod.ReadTimeout
        self.HTTPTransport: type[httpx.HTTPTransport] = mod.HTTPTransport
        self.AsyncHTTPTransport: type[httpx.AsyncHTTPTransport] = mod.AsyncHTTPTransport

    def is_replayable(self, stream: object) -> bool:
        """A body held in memory can be sent again in full."""
        return isinstance(stream, self.ByteStream)

    def __repr__(self) -> str:
        return f"<Library {self.module.__name__}>"
