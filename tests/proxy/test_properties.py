"""Generated requests through the real proxy: only the configured upstream ever
receives one, and it receives exactly what the rules say."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clientlb._proxy import ProxyApp

from ..replicas import Replica
from .servers import Served, raw_request, split_response

pytestmark = pytest.mark.integration

PREFIX = "/pre%20fix"
HOP = ["keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection"]

_unreserved = "abcXYZ019-._~!$&'()*+,;=:@"
_segment = st.lists(
    st.one_of(
        st.sampled_from(list(_unreserved)),
        st.sampled_from(["%2F", "%2f", "%2e", "%2E%2E", "%25", "%00", "%C3%A9", "%20", "..", "."]),
    ),
    max_size=6,
).map("".join)
paths = st.lists(_segment, min_size=1, max_size=5).map(
    lambda segs: "/" + segs[0].lstrip("/") + "".join("/" + s for s in segs[1:])
)
_qchar = st.sampled_from([*list("abcXYZ019-._~!$'()*+,;:@/?%"), "%26", "%3D", "%20", "+"])
_qtext = (
    st.lists(_qchar, max_size=5)
    .map("".join)
    .filter(lambda s: "%" not in s.replace("%26", "").replace("%3D", "").replace("%20", ""))
)
queries = st.lists(st.tuples(st.sampled_from(["k", "a", "long_key", "x"]), _qtext), max_size=5).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)
header_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).map(
    lambda s: "x-p-" + s
)
header_values = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
)
end_to_end = st.dictionaries(header_names, header_values, max_size=6)


def leaves_the_prefix(path: str) -> bool:
    """Whether the upstream would read ``path`` as above its root: ``%2e``,
    ``%2f``, ``%5c`` and ``\\`` decoded, ``;params`` of dot segments dropped (as
    Tomcat does), then normalised under a sentinel root."""
    decoded = re.sub("(?i)%2e", ".", re.sub("(?i)%2f|%5c", "/", path)).replace("\\", "/")
    decoded = re.sub(r"(^|/)(\.{1,2});[^/]*", r"\1\2", decoded)
    normal = posixpath.normpath("/root" + decoded)
    return not (normal == "/root" or normal.startswith("/root/"))


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Replica, Replica, Served]]:
    with Replica("up") as up, Replica("decoy") as decoy:
        app = ProxyApp([up.url + PREFIX])
        with Served(app, lifespan="on") as served:
            yield up, decoy, served


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=paths,
    query=queries,
    headers=end_to_end,
    hop=st.lists(st.sampled_from(HOP), unique=True),
    named=st.lists(header_names, max_size=2, unique=True),
    absolute=st.booleans(),
    spoof_host=st.booleans(),
    forged_for=st.one_of(st.none(), st.sampled_from(["6.6.6.6", "127.0.0.1, 10.0.0.1"])),
)
def test_only_the_upstream_receives_exactly_what_the_rules_say(
    setup: tuple[Replica, Replica, Served],
    path: str,
    query: str,
    headers: dict[str, str],
    hop: list[str],
    named: list[str],
    absolute: bool,
    spoof_host: bool,
    forged_for: str | None,
) -> None:
    up, decoy, served = setup
    up.reset()
    decoy_target = f"127.0.0.1:{decoy.port}"
    target = path + ("?" + query if query else "")
    if absolute:
        target = f"http://{decoy_target}{target}"
    lines = [f"GET {target} HTTP/1.1", f"Host: {decoy_target if spoof_host else 'front.example'}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"{name}: hop-value" for name in hop]
    lines += [f"{name}: named-value" for name in named if name not in headers]
    if forged_for:
        lines.append(f"X-Forwarded-For: {forged_for}")
    lines.append("Connection: " + ", ".join(["close", *named]))
    raw = raw_request(served.port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    status, _, _ = split_response(raw)
    assert decoy.count() == 0
    if leaves_the_prefix(path):
        assert status == 400, raw[:300]
        assert up.count() == 0
        return
    assert status == 200, raw[:300]
    assert up.count() == 1
    record: dict[str, Any] = up.requests[-1]
    assert record["raw_path"] == PREFIX + path
    assert record["query"] == query
    got: dict[str, list[str]] = {}
    for name, value in record["headers"]:
        got.setdefault(name, []).append(value)
    for name, value in headers.items():
        if name in named:
            assert name not in got
        else:
            assert got[name] == [value]
    for name in (*hop, *named):
        assert name not in got
    assert "connection" not in got or got["connection"] != ["close, " + ", ".join(named)]
    assert got["host"] == [f"127.0.0.1:{up.port}"]
    assert got["x-forwarded-for"] == ["127.0.0.1"]
    assert got["x-forwarded-proto"] == ["http"]
