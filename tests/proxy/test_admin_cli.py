"""``clientlb proxy``'s admin listener is ``admin_app``: token, warning, metrics."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from clientlb._cli import main

from ..replicas import Replica
from ..waiting import wait_for
from .servers import Running


def test_the_admin_token_file_allows_a_drain(tmp_path: Path, replicas: list[Replica]) -> None:
    token = tmp_path / "admin.token"
    token.write_text("t0ken\n")
    a, b = replicas[0], replicas[1]
    config = tmp_path / "proxy.toml"
    config.write_text(f'admin = "127.0.0.1:0"\nadmin_token_file = "{token}"\n')
    running = Running(["--config", str(config), "--upstream", a.url, "--upstream", b.url])
    try:
        assert not any("no --admin-token-file" in line for line in running.lines)
        httpx.get(running.url + "/one")
        drain = httpx.post(running.admin + "/drain", params={"upstream": b.url})
        assert drain.status_code == 401
        drain = httpx.post(
            running.admin + "/drain",
            params={"upstream": b.url},
            headers={"authorization": "Bearer t0ken"},
        )
        assert drain.status_code == 200
        for i in range(4):
            assert httpx.get(f"{running.url}/after/{i}").status_code == 200
        assert sum(a.count(path=f"/after/{i}") for i in range(4)) == 4  # b drained
        metrics = httpx.get(running.admin + "/metrics").text
        assert 'clientlb_requests_total{pool="default"} 5.0' in metrics
        assert 'clientlb_upstream_request_duration_seconds_count{pool="default"' in metrics
        refused = httpx.get(running.admin + "/stats", headers={"host": "rebound.example"})
        assert refused.status_code == 421
    finally:
        assert running.stop() == 0


def test_the_client_connections_open_are_a_gauge(replicas: list[Replica]) -> None:
    """``clientlb_proxy_client_connections`` counts the proxy listener's open
    connections (kept-alive ones too), not the admin listener's."""
    running = Running(["--admin", "127.0.0.1:0", "--upstream", replicas[0].url])
    held: list[socket.socket] = []
    try:
        host, port = running.url.removeprefix("http://").rsplit(":", 1)
        for _ in range(3):  # one request each, then kept alive
            sock = socket.create_connection((host, int(port)), timeout=5)
            held.append(sock)
            sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        metrics = httpx.get(running.admin + "/metrics").text
        assert "\nclientlb_proxy_client_connections 3.0\n" in metrics
        assert 'clientlb_proxy_websockets{pool="default"} 0.0' in metrics
        stats = httpx.get(running.admin + "/stats").json()
        assert stats["proxy"] == {"client_connections": 3, "websockets": 0}
        for sock in held:
            sock.close()
        wait_for(
            lambda: httpx.get(running.admin + "/stats").json()["proxy"]["client_connections"] == 0
        )
    finally:
        for sock in held:
            sock.close()
        assert running.stop() == 0


def test_an_exposed_admin_without_a_token_warns(replicas: list[Replica]) -> None:
    running = Running(["--upstream", replicas[0].url, "--admin", "0.0.0.0:0"])
    try:
        assert any("no --admin-token-file" in line for line in running.lines)
        port = running.admin.rsplit(":", 1)[1]
        assert httpx.post(f"http://127.0.0.1:{port}/drain").status_code == 403
    finally:
        assert running.stop() == 0


def test_a_missing_token_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope")
    assert main(["proxy", "--upstream", "http://127.0.0.1:1", "--admin-token-file", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert "--admin-token-file" in err and "cannot read" in err
