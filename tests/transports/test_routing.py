"""The upstream URL is joined from already parsed parts rather than parsed again
(a hot path): it must be exactly the URL that parsing the joined string gives."""

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
