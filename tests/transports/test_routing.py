"""The upstream URL is joined from already parsed parts rather than parsed again,
and the upstream's request copied rather than built again (a hot path): they must
be exactly the URL that parsing the joined string gives and the request that
building it gives."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from clientlb import Upstream
from clientlb._routing import Readdress

from ._support import httpx

READDRESS = Readdress(httpx)
_joined_url, _parsed_url = READDRESS.joined_url, READDRESS.parsed_url

TOKENS = [*"abcXYZ019-._~!$&'()*+,;=:@%/? é", "%2F", "%20", "%41", "..", "//"]
SEGMENT = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)
BASES = st.builds(
    lambda scheme, host, port, prefix: Upstream(f"{scheme}://{host}{port}{prefix}"),
    st.sampled_from(["http", "https"]),
    st.sampled_from(["h", "10.0.0.1", "[::1]", "Example.COM"]),
    st.sampled_from(["", ":80", ":443", ":8000"]),
    st.sampled_from(["", "/", "/v2", "/v2/", "/a%20b", "/api/v1"]),
)


def same(a: httpx.URL, b: httpx.URL) -> None:
    assert str(a) == str(b)
    assert (a.scheme, a.host, a.port, a.raw_path) == (b.scheme, b.host, b.port, b.raw_path)
    assert a.netloc == b.netloc


@given(upstream=BASES, path=SEGMENT, query=st.one_of(st.none(), SEGMENT))
def test_joined_url_is_the_parsed_url(upstream: Upstream, path: str, query: str | None) -> None:
    text = "http://svc" + (path and "/" + path.lstrip("/")) + ("" if query is None else "?" + query)
    try:
        request_url = httpx.URL(text)
    except httpx.InvalidURL:
        assume(False)
        raise
    same(_joined_url(request_url, upstream.base), _parsed_url(request_url, upstream.base))


@pytest.mark.parametrize(
    ("request_url", "base", "expected"),
    [
        ("http://svc", "http://h:8000/v2", "http://h:8000/v2/"),
        ("http://svc/?", "http://h:8000", "http://h:8000/?"),
        ("http://svc/a%2Fb?x=%26#frag", "https://h", "https://h/a%2Fb?x=%26"),
        ("http://svc/x", "http://[::1]:8080", "http://[::1]:8080/x"),
    ],
)
def test_joined_url_examples(request_url: str, base: str, expected: str) -> None:
    url = _joined_url(httpx.URL(request_url), base)
    assert str(url) == expected
    same(url, _parsed_url(httpx.URL(request_url), base))


def test_the_fast_join_is_in_use() -> None:
    assert READDRESS.url == _joined_url  # the check at start passed on this library


@pytest.mark.parametrize(
    "headers",
    [
        [("Host", "svc"), ("Accept", "*/*"), ("X-Id", "1")],
        [("accept", "*/*"), ("HOST", "svc"), ("host", "other"), ("X-Id", "é".encode())],
        [("X-Only", "1")],
        [],
    ],
)
def test_copied_request_is_the_built_request(headers: list[tuple[str, str | bytes]]) -> None:
    upstream = Upstream("https://h:8443/v2")
    stream = httpx.ByteStream(b"body")
    request = httpx.Request(
        "POST", "http://svc/a/b?x=1", headers=headers, extensions={"timeout": {"pool": 2.0}}
    )
    built = READDRESS.built_request(request, upstream, stream)
    copied = READDRESS.copied_request(request, upstream, stream)
    assert type(copied) is type(built)
    assert vars(copied).keys() == vars(built).keys()
    assert (copied.method, str(copied.url), copied.extensions) == (
        built.method,
        str(built.url),
        built.extensions,
    )
    assert copied.stream is built.stream is stream
    assert copied.headers.raw == built.headers.raw
    assert list(copied.headers.multi_items()) == list(built.headers.multi_items())
    assert copied.extensions is not request.extensions  # the caller's dict stays its own
    hosts = [value for name, value in copied.headers.raw if name.lower() == b"host"]
    assert hosts == [b"h:8443"] * len(hosts)


@pytest.mark.parametrize("headers", [[("Accept", "*/*"), ("X-Id", "1")], []])
def test_a_request_without_host_gets_the_upstreams(headers: list[tuple[str, str]]) -> None:
    # A request built with its stream (as a server side or a redirect does) has
    # no Host of its own: both paths put the upstream's first, as the library's
    # constructor puts its own.
    upstream = Upstream("https://h:8443/v2")
    stream = httpx.ByteStream(b"")
    request = httpx.Request("GET", "http://svc/a", headers=headers, stream=stream)
    assert "host" not in request.headers
    built = READDRESS.built_request(request, upstream, stream)
    copied = READDRESS.copied_request(request, upstream, stream)
    expected = [(b"Host", b"h:8443"), *request.headers.raw]
    assert built.headers.raw == copied.headers.raw == expected
    assert vars(copied.headers) == vars(built.headers)
    assert "host" not in request.headers  # the caller's headers stay as they were


def test_the_fast_copy_is_in_use() -> None:
    assert READDRESS.request == READDRESS.copied_request  # the check at start passed
