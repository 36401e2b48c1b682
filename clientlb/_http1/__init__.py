"""Sans-IO HTTP/1.1, as the proxy needs it: strict parsing and exact framing.

This package contains no networking code at all (as h11 says of itself): the
front end that reads clients' requests and the engines that read upstreams'
responses hand it the bytes they receive and act on what it says. It is strict
where laxness lets bytes of one exchange reach another:

* a head is parsed only once whole, within size limits checked while it grows;
  obs-fold, bare CR or LF, whitespace before a colon and control characters are
  refused;
* a message's framing is decided here once (RFC 9112 section 6): conflicting or
  repeated lengths, Content-Length beside Transfer-Encoding and codings other
  than ``chunked`` are refused, never guessed;
* a response ends exactly at its framing boundary; a byte past it, or a byte on a
  connection that awaits no response, means the connection cannot be trusted
  again.
"""

from ._body import BodyDecoder, Chunked, Fixed, UntilClose
from ._errors import ProtocolError
from ._framing import NO_BODY, Framing, request_framing, response_framing
from ._head import RequestHead, ResponseHead, parse_request_head, parse_response_head
from ._limits import HeadLimits
from ._reader import RequestReader, ResponseReader
from ._writer import LAST_CHUNK, BodyEncoder, request_head, response_head

__all__ = [
    "LAST_CHUNK",
    "NO_BODY",
    "BodyDecoder",
    "BodyEncoder",
    "Chunked",
    "Fixed",
    "Framing",
    "HeadLimits",
    "ProtocolError",
    "RequestHead",
    "RequestReader",
    "ResponseHead",
    "ResponseReader",
    "UntilClose",
    "parse_request_head",
    "parse_response_head",
    "request_framing",
    "request_head",
    "response_head",
    "response_framing",
]
