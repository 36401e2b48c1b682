"""The HTTP client library the shells are written against (httpx, and httpcore
under it), imported here only.

The transports, proxies, health checks and discovery write ``from ._httpx import
httpx``, so running them on another library with httpx's API (its maintained
fork httpx2, say) is a change to this file rather than to every shell. The core
imports no HTTP library at all. A test keeps it that way.
"""

import httpcore
import httpx

__all__ = ["httpcore", "httpx"]
