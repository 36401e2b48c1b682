"""HTTPS upstreams through the transports: ``verify=`` reaches every upstream's
inner transport (one shared SSL context) and the health checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clientlb import ConfigError, HealthCheck, Pool
from clientlb._core import Health
from clientlb._tls import default_context

from ..certs import Certs
from ..proxy.servers import Named, Served
from ..waiting import wait_for
from ._support import clientlb, httpx

pytestmark = pytest.mark.integration


@pytest.fixture
def secure(certs: Certs) -> Iterator[list[tuple[Named, Served]]]:
    """Two HTTPS upstreams with certificates from the test CA."""
    apps = [Named("a"), Named("b")]
    served = [Served(app, tls=certs.tls).start() for app in apps]
    yield list(zip(apps, served, strict=True))
    for s in served:
        s.stop()


def test_sync_transport_verifies_with_one_context(
    secure: list[tuple[Named, Served]], certs: Certs
) -> None:
    urls = [s.url for _, s in secure]
    transport = clientlb.BalancingTransport(urls, verify=certs.ca_file)
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        bodies = {client.get("/x").text for _ in range(4)}
        assert bodies == {"a https /x", "b https /x"}
        inners = list(transport._inners._by_key.values())
        assert len(inners) == 2
        # Not a context per upstream: building one loads the whole CA bundle.
        assert inners[0]._pool._ssl_context is inners[1]._pool._ssl_context


@pytest.mark.anyio
async def test_async_transport_verifies_with_a_context(
    secure: list[tuple[Named, Served]], certs: Certs
) -> None:
    transport = clientlb.AsyncBalancingTransport([s.url for _, s in secure], verify=certs.context())
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        bodies = {(await client.get("/y")).text for _ in range(4)}
    assert bodies == {"a https /y", "b https /y"}


def test_an_untrusted_certificate_fails_the_request(secure: list[tuple[Named, Served]]) -> None:
    app, up = secure[0]
    transport = clientlb.BalancingTransport([up.url])  # the certifi bundle only
    with (
        httpx.Client(transport=transport, base_url="http://svc") as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get("/x")
    assert app.paths == []


def test_verify_off_accepts_any_certificate(secure: list[tuple[Named, Served]]) -> None:
    _, up = secure[0]
    transport = clientlb.BalancingTransport([up.url], verify=False)
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        assert client.get("/x").text == "a https /x"


def test_health_checks_verify_alike(secure: list[tuple[Named, Served]], certs: Certs) -> None:
    app, up = secure[0]
    pool = Pool([up.url], health_check=HealthCheck(interval=0.03, timeout=1.0, rise=1, fall=1))
    transport = clientlb.BalancingTransport(pool, verify=certs.ca_file)
    try:
        wait_for(lambda: app.paths.count("/health") >= 3)
        assert pool.members[0].health is Health.HEALTHY
    finally:
        transport.close()


def test_verify_with_a_given_inner_is_a_config_error(certs: Certs) -> None:
    with pytest.raises(ConfigError, match="verify"):
        clientlb.BalancingTransport(
            ["https://127.0.0.1:1"], inner=httpx.HTTPTransport(), verify=certs.ca_file
        )
    with pytest.raises(ConfigError, match="verify"):
        clientlb.AsyncBalancingTransport(["https://127.0.0.1:1"], verify=7)  # type: ignore[arg-type]


def test_verify_true_reads_ssl_cert_file_as_httpx_does(
    secure: list[tuple[Named, Served]], certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, up = secure[0]
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca_file)
    default_context.cache_clear()  # the default is read once per process
    try:
        transport = clientlb.BalancingTransport([up.url])
        with httpx.Client(transport=transport, base_url="http://svc") as client:
            assert client.get("/env").text == "a https /env"
        with httpx.Client() as plain:  # httpx itself, for comparison
            assert plain.get(up.url + "/env").status_code == 200
    finally:
        default_context.cache_clear()
