"""Stream wrappers: a request body that remembers whether it was read, and a
response body that holds its upstream's lease until it is closed.

In-flight counts settle when the response body closes, not when headers arrive
(as httpx sets ``response.elapsed`` when its stream closes).

The classes here are the wrappers' behaviour only: httpx (and httpx2) check a
body's class (``SyncByteStream`` or ``AsyncByteStream``), so each client library
gets its own subclasses of them, from ``stream_classes()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ._core import Lease, Outcome
from ._errors_map import outcome_of
from ._httpx import httpx

_SUCCESS = Outcome.SUCCESS  # an enum's member, looked up once (not per response)


class TrackedSyncStream:
    """A request body stream that notes when it starts to be read."""

    def __init__(self, stream: httpx.SyncByteStream) -> None:
        self.stream = stream
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        yield from self.stream

    def close(self) -> None:
        self.stream.close()


class TrackedAsyncStream:
    """The async twin of ``TrackedSyncStream``."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self.stream = stream
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        async for chunk in self.stream:
            yield chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


class LeasedSyncStream:
    """A response body that releases its lease when closed or when it fails."""

    def __init__(self, stream: httpx.SyncByteStream, lease: Lease) -> None:
        self.stream = stream
        self.lease = lease

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.stream
        except GeneratorExit:  # iteration abandoned, response still open: close() ends it
            raise
        except BaseException as exc:
            self.lease.finish(outcome_of(exc))
            raise

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.lease.finish(_SUCCESS)


class LeasedAsyncStream:
    """The async twin of ``LeasedSyncStream``; cancellation releases the lease too.

    Its iterator is a ``_LeasedChunks``, not an async generator: an event loop
    registers every async generator that starts (asyncio keeps them in a weak
    set, for its shutdown) and the client closes it after the last chunk, which
    a plain iterator is spared."""

    def __init__(self, stream: httpx.AsyncByteStream, lease: Lease) -> None:
        self.stream = stream
        self.lease = lease

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _LeasedChunks(self.stream.__aiter__(), self.lease)

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            self.lease.finish(_SUCCESS)


class _LeasedChunks:
    """One iteration of a ``LeasedAsyncStream``: its body's chunks, the lease
    settled when one fails. An iteration abandoned settles nothing (the
    response's ``aclose()`` does), as the generator it replaces did."""

    __slots__ = ("chunks", "lease")

    def __init__(self, chunks: AsyncIterator[bytes], lease: Lease) -> None:
        self.chunks = chunks
        self.lease = lease

    def __aiter__(self) -> _LeasedChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.chunks.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self.lease.finish(outcome_of(exc))
            raise


@dataclass(frozen=True, slots=True)
class StreamClasses:
    """The wrappers as stream classes of one client library."""

    tracked_sync: type[TrackedSyncStream]
    tracked_async: type[TrackedAsyncStream]
    leased_sync: type[LeasedSyncStream]
    leased_async: type[LeasedAsyncStream]


def stream_classes(module: ModuleType) -> StreamClasses:
    """The wrappers for ``module`` (httpx, or a library with its API)."""

    def derive(cls: type[Any], base: type[Any]) -> Any:
        return type(cls.__name__, (cls, base), {"__module__": __name__})

    return StreamClasses(
        derive(TrackedSyncStream, module.SyncByteStream),
        derive(TrackedAsyncStream, module.AsyncByteStream),
        derive(LeasedSyncStream, module.SyncByteStream),
        derive(LeasedAsyncStream, module.AsyncByteStream),
    )
