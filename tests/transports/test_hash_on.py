"""``hash_on=`` in the transports: a hashing algorithm needs a key (a transport
has no client address), a key needs a hashing algorithm, and the three forms
(header, cookie, callable) keep each key on one upstream."""

from __future__ import annotations

from typing import Any

import pytest

from clientlb import Pool

from ..replicas import Replica
from ._support import Flavour, MockRouter, clientlb, httpx

pytestmark = pytest.mark.anyio

ABC = ["http://a:8000", "http://b:8000", "http://c:8000"]
TRANSPORTS = [clientlb.BalancingTransport, clientlb.AsyncBalancingTransport]
HASHING = sorted(name for name, cls in clientlb.ALGORITHMS.items() if cls.hashes)
NOT_HASHING = sorted(name for name, cls in clientlb.ALGORITHMS.items() if not cls.hashes)


def where(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"host": request.url.host})


def config_error(cls: type, **kwargs: Any) -> clientlb.ConfigError:
    with pytest.raises(clientlb.ConfigError) as info:
        cls(**kwargs)
    return info.value


def accepted(cls: type, *args: Any, **kwargs: Any) -> None:
    """Build a transport the checks accept, and close it (a sync one starts its
    probe thread at once, and tests/health counts threads)."""
    transport = cls(*args, **kwargs)
    if isinstance(transport, clientlb.BalancingTransport):
        transport.close()


# -- what is refused, at construction ----------------------------------------------------


@pytest.mark.parametrize("cls", TRANSPORTS)
@pytest.mark.parametrize("algorithm", HASHING)
def test_a_hashing_algorithm_without_a_key_is_refused(cls: type, algorithm: str) -> None:
    error = config_error(cls, upstreams=ABC, algorithm=algorithm)
    assert error.field == "hash_on"
    assert algorithm in str(error) and "client address" in str(error)


@pytest.mark.parametrize("cls", TRANSPORTS)
@pytest.mark.parametrize("algorithm", NOT_HASHING)
def test_a_key_for_an_algorithm_that_never_reads_it_is_refused(cls: type, algorithm: str) -> None:
    error = config_error(cls, upstreams=ABC, algorithm=algorithm, hash_on="header:X-User")
    assert error.field == "hash_on"
    assert algorithm in str(error)


@pytest.mark.parametrize("cls", TRANSPORTS)
def test_a_key_is_refused_without_any_algorithm_given(cls: type) -> None:
    assert config_error(cls, upstreams=ABC, hash_on="cookie:sid").field == "hash_on"


@pytest.mark.parametrize("cls", TRANSPORTS)
@pytest.mark.parametrize(
    "value",
    [
        "header:",
        "cookie:",
        "header",
        "cookie",
        "query:q",
        "Header:x",
        "header:a b",
        "cookie:a;b",
        "cookie:a=b",
        "header:a:b",
        "header:é",
        "",
        42,
        b"header:x",
    ],
)
def test_bad_hash_on_values_are_refused(cls: type, value: object) -> None:
    error = config_error(cls, upstreams=ABC, algorithm="consistent_hash", hash_on=value)
    assert error.field == "hash_on"


@pytest.mark.parametrize("cls", TRANSPORTS)
def test_a_users_pool_is_held_to_the_same_rules(cls: type) -> None:
    hashing = Pool(ABC, algorithm="consistent_hash")
    assert config_error(cls, upstreams=hashing).field == "hash_on"
    assert config_error(cls, upstreams=Pool(ABC), hash_on="header:x").field == "hash_on"
    accepted(cls, hashing, hash_on="header:x")  # hash_on is the transport's, not the Pool's


@pytest.mark.parametrize("cls", TRANSPORTS)
def test_services_are_checked_each_by_its_own_algorithm(cls: type) -> None:
    mixed = {"users": Pool(ABC, algorithm="ip_hash"), "orders": ABC}
    error = config_error(cls, services=mixed)
    assert error.field == "hash_on" and "'users'" in str(error)
    accepted(cls, services=mixed, hash_on="cookie:sid")  # serves the hashing one; fine
    plain = {"users": Pool(ABC), "orders": ABC}
    assert config_error(cls, services=plain, hash_on="cookie:sid").field == "hash_on"


@pytest.mark.parametrize("cls", TRANSPORTS)
def test_a_custom_hashing_algorithm_needs_a_key_too(cls: type) -> None:
    class Sharded(clientlb.Algorithm):
        name = "sharded"
        hashes = True

        def rebuild(self, members: Any) -> None:
            self.members = list(members)

        def pick(self, key: str | None, exclude: Any) -> Any:
            left = [m for m in self.members if m not in exclude]
            return left[len(key or "") % len(left)] if left else None

    assert config_error(cls, upstreams=ABC, algorithm=Sharded()).field == "hash_on"
    accepted(cls, ABC, algorithm=Sharded(), hash_on=lambda request: request.url.path)


# -- what each form hashes -----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", HASHING)
async def test_cookie_keys_stick_and_spread(flavour: Flavour, algorithm: str) -> None:
    router = MockRouter()
    router.route().mock(side_effect=where)
    transport = flavour.transport(
        ABC, algorithm=algorithm, hash_on="cookie:session", inner=flavour.mock(router)
    )
    placed: dict[str, set[str]] = {}
    async with flavour.client(transport) as client:
        for _ in range(3):
            for user in range(30):
                cookie = f"theme=dark; session=s{user}; other=1"
                r = await client.request("GET", "/", headers={"Cookie": cookie})
                placed.setdefault(f"s{user}", set()).add(r.json()["host"])
    assert all(len(hosts) == 1 for hosts in placed.values()), placed
    assert len({h for hosts in placed.values() for h in hosts}) == 3


async def test_a_request_without_its_key_is_placed_at_random(flavour: Flavour) -> None:
    router = MockRouter()
    router.route().mock(side_effect=where)
    transport = flavour.transport(
        ABC, algorithm="consistent_hash", hash_on="cookie:session", inner=flavour.mock(router)
    )
    seen = set()
    async with flavour.client(transport) as client:
        for cookie in (None, "session=", "other=s1", 'session=""') * 15:
            headers = {"Cookie": cookie} if cookie is not None else {}
            seen.add((await client.request("GET", "/", headers=headers)).json()["host"])
    assert len(seen) >= 2  # 60 keyless requests on one host of three: (1/3)**59 odds


async def test_an_empty_header_counts_as_no_key(flavour: Flavour) -> None:
    router = MockRouter()
    router.route().mock(side_effect=where)
    transport = flavour.transport(
        ABC, algorithm="ip_hash", hash_on="header:X-User", inner=flavour.mock(router)
    )
    async with flavour.client(transport) as client:
        seen = {
            (await client.request("GET", "/", headers={"X-User": ""})).json()["host"]
            for _ in range(60)
        }
    assert len(seen) >= 2


# -- real replicas -------------------------------------------------------------------------


async def test_cookie_hashing_against_real_replicas(
    flavour: Flavour, replicas: list[Replica]
) -> None:
    transport = flavour.transport(
        [r.url for r in replicas], algorithm="consistent_hash", hash_on="cookie:session"
    )
    placed: dict[str, set[str]] = {}
    async with flavour.client(transport) as client:
        for _ in range(2):
            for user in range(24):
                r = await client.request("GET", "/me", headers={"Cookie": f"session=u{user}"})
                placed.setdefault(f"u{user}", set()).add(r.json()["replica"])
    assert all(len(names) == 1 for names in placed.values()), placed
    assert sum(1 for r in replicas if r.count()) >= 2
