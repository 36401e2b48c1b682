"""Stream wrappers: a request body that remembers whether it was read, and a
response body that holds its upstream's lease until it is closed.

In-flight counts settle when the response body closes, not when headers arrive
(as httpx sets ``response.elapsed`` when its stream closes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._core import Lease, Outcome
from ._errors_map import outcome_of
from ._httpx import httpx


def is_replayable(stream: Any) -> bool:
    """A body held in memory can be sent again in full."""
    return isinstance(stream, httpx.ByteStream)


class TrackedSyncStream(httpx.SyncByteStream):
    """A request body stream that notes when it starts to be read."""

    def __init__(self, stream: httpx.SyncByteStream) -> None:
        self.stream = stream
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        yield from self.stream

    def close(self) -> None:
        self.stream.close()


class TrackedAsyncStream(httpx.AsyncByteStream):
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


class LeasedSyncStream(httpx.SyncByteStream):
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
            self.lease.finish(Outcome.SUCCESS)


class LeasedAsyncStream(httpx.AsyncByteStream):
    """The async twin of ``LeasedSyncStream``; cancellation releases the lease too."""

    def __init__(self, stream: httpx.AsyncByteStream, lease: Lease) -> None:
        self.stream = stream
        self.lease = lease

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.stream:
                yield chunk
        except GeneratorExit:  # iteration abandoned, response still open: aclose() ends it
            raise
        except BaseException as exc:
            self.lease.finish(outcome_of(exc))
            raise

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            self.lease.finish(Outcome.SUCCESS)
