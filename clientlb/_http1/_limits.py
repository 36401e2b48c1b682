"""Size limits on message heads, checked while the bytes arrive."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """Bytes allowed in a head, so that memory per connection stays bounded.

    The defaults are nginx's ``large_client_header_buffers 4 8k``: a request line
    or a header line over 8 KiB, or a whole head over 32 KiB, is refused (414 for
    the request line, 431 for the rest). ``status_line`` bounds a response's
    first line instead.
    """

    request_line: int = 8 * 1024
    header_line: int = 8 * 1024
    head: int = 32 * 1024
