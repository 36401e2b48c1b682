"""The admin app is read-only without a token, and only answers its own names."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from clientlb import ConfigError, Pool, admin_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client(app: object, host: str = "127.0.0.1:9901") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app),  # type: ignore[arg-type]
        base_url=f"http://{host}",
    )


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "admin.token"
    path.write_text("s3cret-token\n")
    return path


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:9901", True),
        ("localhost", True),
        ("[::1]:9901", True),
        ("10.1.2.3:9901", True),  # the address the request came to
        ("admin.internal", True),  # allowed_hosts
        ("evil.example", False),
        ("evil.example:9901", False),
        ("10.9.9.9", False),
    ],
)
async def test_only_known_hosts(host: str, allowed: bool) -> None:
    app = admin_app(Pool(["http://a:1"]), allowed_hosts=["admin.internal"])
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3:9901") as admin:
        answer = await admin.get("/stats", headers={"host": host})
    assert answer.status_code == (200 if allowed else 421)


async def test_read_only_without_a_token_file() -> None:
    pool = Pool(["http://a:1", "http://b:1"])
    async with client(admin_app(pool)) as admin:
        for action in ("drain", "enable", "weight"):
            answer = await admin.post(f"/{action}", params={"upstream": "http://a:1"})
            assert answer.status_code == 403, action
        assert (await admin.get("/drain")).status_code == 405
    assert [m.state for m in pool.members] == ["healthy", "healthy"]


async def test_writes_need_the_bearer_token(token: Path) -> None:
    pool = Pool(["http://a:1", "http://b:1"])
    async with client(admin_app(pool, token_file=str(token))) as admin:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"}):
            answer = await admin.post("/drain", params={"upstream": "http://a:1"}, headers=headers)
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"] == "Bearer"
    assert len(pool) == 2


async def test_drain_enable_and_weight(token: Path) -> None:
    pool = Pool(["http://a:1", "http://b:1"], ["http://s:1"])
    auth = {"authorization": "Bearer s3cret-token"}
    async with client(admin_app(pool, token_file=str(token))) as admin:

        async def post(action: str, **params: str) -> httpx.Response:
            return await admin.post(f"/{action}", params=params, headers=auth)

        lease = pool.pick()  # a request in flight: the drain waits for it
        url = lease.upstream.url
        other = ({"http://a:1", "http://b:1"} - {url}).pop()
        drained = await post("drain", upstream=url)
        assert drained.json()["state"] == "draining"
        lease.finish()
        assert [m.url for m in pool.members] == [other, "http://s:1"]
        assert (await post("enable", upstream=url)).json()["state"] == "healthy"
        assert sorted(m.url for m in pool.members) == ["http://a:1", "http://b:1", "http://s:1"]
        weighed = await post("weight", upstream="http://s:1", weight="3")
        assert weighed.json() == {
            "pool": "default",
            "upstream": "http://s:1",
            "state": "healthy",
            "weight": 3.0,
        }
        assert {m.url: (m.tier, m.weight) for m in pool.members}["http://s:1"] == ("standby", 3)
        assert (await post("weight", upstream="http://s:1", weight="-1")).status_code == 400
        assert (await post("drain", upstream="http://zz:1")).status_code == 404
        assert (await post("drain")).status_code == 400
        assert (await post("drain", upstream=other, pool="nope")).status_code == 404


def test_a_token_file_must_be_readable_and_not_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_file"):
        admin_app(Pool(["http://a:1"]), token_file=str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        admin_app(Pool(["http://a:1"]), token_file=str(tmp_path / "empty"))
