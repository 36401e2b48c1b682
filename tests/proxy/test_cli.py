"""``clientlb proxy`` as a subprocess: flags, the TOML file, the admin listener,
and a graceful SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clientlb._cli import main

from ..replicas import Replica
from .servers import Running

pytestmark = pytest.mark.integration


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clientlb", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["proxy"], "--upstream"),
        (["proxy", "--upstream", "ftp://x"], "--upstream"),
        (["proxy", "--upstream", "http://a:1", "--algorithm", "fastest"], "--algorithm"),
        (["proxy", "--upstream", "http://a:1", "--listen", "nowhere"], "--listen"),
        (
            ["proxy", "--upstream", "http://a:1", "--trusted-proxy", "10.0.0.0/33"],
            "trusted_proxies",
        ),
        (["proxy", "--upstream", "http://a:1", "--health-path", "health"], "--health-path"),
        (["proxy", "--upstream", "http://a:1", "--config", "/nonexistent.toml"], "--config"),
        (["demo", "--duration", "-1"], "--duration"),
        (["proxy", "--bogus"], "--bogus"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], named: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('upstreams = ["http://a:1"]\nalgoritm = "random"\n', "algoritm"),
        ('upstreams = [{ url = "http://a:1", weight = -1 }]\n', "weight"),
        ('upstreams = ["http://a:1"]\n[retry]\nmax_retries = "3"\n', "max_retries"),
        ('upstreams = ["http://a:1"]\n[timeouts]\nread = 0\n', "timeouts.read"),
        ('upstreams = ["http://a:1"]\n[server]\nworkers = 4\n', "server.workers"),
        ('upstreams = ["http://a:1"\n', "--config"),
        ('upstreams = ["http://a:1", "http://a:1"]\n', "duplicate"),
    ],
)
def test_bad_config_exits_2_naming_the_field(
    tmp_path: Path, text: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(text)
    assert main(["proxy", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err


@pytest.fixture
def replicas2() -> Iterator[tuple[Replica, Replica]]:
    with Replica("a") as a, Replica("b", delay=0.5) as b:
        yield a, b


def test_config_file_weights_and_admin(tmp_path: Path, replicas2: tuple[Replica, Replica]) -> None:
    a, b = replicas2
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'algorithm = "weighted_round_robin"\nadmin = "127.0.0.1:0"\n'
        f'upstreams = [{{ url = "{a.url}", weight = 3 }}, {{ url = "{b.url}/slow", weight = 1 }}]\n'
        f"[timeouts]\nconnect = 2\n[retry]\nmax_retries = 1\n"
    )
    running = Running(["--config", str(config)])
    try:
        with httpx.Client(base_url=running.url) as client:
            for _ in range(8):
                assert client.get("/hello").status_code == 200
        assert (a.count(), b.count()) == (6, 2)
        assert b.requests[-1]["path"] == "/slow/hello"
        stats = httpx.get(running.admin + "/stats").json()
        assert stats["algorithm"] == "weighted_round_robin"
        assert [u["weight"] for u in stats["upstreams"]] == [3, 1]
        assert "<table" in httpx.get(running.admin + "/status").text
        metrics = httpx.get(running.admin + "/metrics").text
        assert "clientlb_upstream_requests_total" in metrics
    finally:
        assert running.stop() == 0


def test_sigterm_finishes_requests_in_flight(replicas2: tuple[Replica, Replica]) -> None:
    _, slow = replicas2
    running = Running(["--upstream", slow.url])
    results: list[httpx.Response] = []
    request = threading.Thread(target=lambda: results.append(httpx.get(running.url + "/work")))
    request.start()
    deadline = 50
    while not slow.count() and deadline:  # the request reached the upstream
        request.join(0.02)
        deadline -= 1
    code = running.stop()
    request.join(10)
    assert code == 0
    assert results and results[0].status_code == 200
    assert json.loads(results[0].content)["path"] == "/work"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bogus://x", "unknown discovery scheme"),
        ("etcd://127.0.0.1/", "etcd://HOST:PORT/PREFIX"),
        ("etcd://127.0.0.1:2379/", "missing key prefix"),
        ("dns://users:8000?ttl=3", "unknown option"),
        ("file://", "missing path"),
    ],
)
def test_bad_discovery_uri_exits_2(
    uri: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["proxy", "--discovery", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--discovery" in err[0] and message in err[0], err


def test_discovery_from_a_watched_file(tmp_path: Path, replicas2: tuple[Replica, Replica]) -> None:
    a, b = replicas2
    registry = tmp_path / "upstreams.toml"
    registry.write_text(f'upstreams = ["{a.url}"]\n')
    running = Running(["--discovery", f"file://{registry}", "--admin", "127.0.0.1:0"])
    try:
        with httpx.Client(base_url=running.url) as client:
            assert client.get("/one").status_code == 200
            assert a.count(path="/one") == 1
            registry.write_text(f'upstreams = ["{b.url}/b"]\n')
            deadline = 200
            while deadline:  # the file is polled: wait until the pool follows it
                urls = [u["url"] for u in httpx.get(running.admin + "/stats").json()["upstreams"]]
                if urls == [f"{b.url}/b"]:
                    break
                deadline -= 1
                threading.Event().wait(0.02)
            assert urls == [f"{b.url}/b"]
            assert client.get("/two").status_code == 200
            assert b.count(path="/b/two") == 1 and a.count(path="/two") == 0
    finally:
        assert running.stop() == 0
