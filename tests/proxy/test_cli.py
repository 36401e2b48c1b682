"""``clientlb proxy`` as a subprocess: flags, the TOML file, the admin listener,
and a graceful SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
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
        (["demo", "--plot", "x.png"], "--plot"),
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
        ('upstreams = ["http://a:1"]\nalgorithm = "consistent_hash"\n', "hash_on"),
        ('upstreams = ["http://a:1"]\nhash_on = "cookie:sid"\n', "hash_on"),
        ('upstreams = ["http://a:1"]\nalgorithm = "ip_hash"\nhash_on = "cookie:"\n', "hash_on"),
        ('upstreams = ["http://a:1"]\n[sticky]\nname = "a b"\n', "sticky.name"),
        ('upstreams = ["http://a:1"]\n[sticky]\nsecret = "short"\n', "sticky.secret"),
        ('upstreams = ["http://a:1"]\n[sticky]\nmax_age = 0\n', "sticky.max_age"),
        ('upstreams = ["http://a:1"]\n[sticky]\ndomain = "x"\n', "sticky.domain"),
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


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--algorithm", "consistent_hash"], "hash_on"),
        (["--hash-on", "header:x"], "--hash-on"),  # round robin never reads it
        (["--algorithm", "ip_hash", "--hash-on", "header:"], "--hash-on"),
        (["--algorithm", "ip_hash", "--hash-on", "param:x"], "--hash-on"),
        (["--algorithm", "ip_hash", "--hash-on", "cookie:a\nb"], "--hash-on"),
        (["--sticky-cookie", "a;b"], "--sticky-cookie"),
        (["--sticky-cookie", ""], "--sticky-cookie"),
    ],
)
def test_bad_hash_on_and_sticky_flags_exit_2_with_one_line(
    flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["proxy", "--upstream", "http://a:1", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: {named}: " in err[0], err


def test_sticky_cookie_and_hash_on_from_flags_and_file(
    tmp_path: Path, replicas2: tuple[Replica, Replica]
) -> None:
    a, b = replicas2
    b.delay = 0.0
    config = tmp_path / "proxy.toml"
    config.write_text('[sticky]\nname = "from-file"\nsecret = "0123456789abcdef"\nmax_age = 60\n')
    running = Running(
        [
            "--config",
            str(config),
            "--upstream",
            a.url,
            "--upstream",
            b.url,
            "--algorithm",
            "consistent_hash",
            "--hash-on",
            "header:x-user",
            "--sticky-cookie",
            "srv",
        ]
    )
    try:
        with httpx.Client(base_url=running.url) as client:
            first = client.get("/")
            (cookie,) = first.headers.get_list("set-cookie")
            assert cookie.startswith("srv=") and "Max-Age=60" in cookie  # the file's age
            where = first.json()["replica"]
            for user in range(8):  # the pin wins over each request's key
                r = client.get("/", headers={"x-user": f"u{user}"})
                assert (r.json()["replica"], r.headers.get("set-cookie")) == (where, None)
    finally:
        assert running.stop() == 0


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


@pytest.fixture
def never_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A configuration these tests expect refused must not start a server."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the configuration was accepted")

    monkeypatch.setattr("clientlb._proxy._serve.run", refuse)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line on stderr, after ``clientlb proxy: error: ``."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    prefix = "clientlb proxy: error: "
    assert lines[0].startswith(prefix), lines
    return lines[0][len(prefix) :]


@pytest.mark.usefixtures("never_serve")
@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[health]\nexpected = 200\n", "health.expected: "),
        ('[health]\nexpected = ["200"]\n', "health.expected: "),
        ('[health]\npath = "/a b"\n', "health.path: "),
        ("[retry]\nretry_on_status = 503\n", "retry.retry_on_status: "),
        ('[retry]\nretry_non_idempotent = "yes"\n', "retry.retry_non_idempotent: "),
        ("[retry]\nbudget = true\n", "retry.budget: "),
        ('[retry.budget]\nratio = "x"\n', "retry.budget.ratio: "),
        ("[retry.budget]\nwindow = 3600\n", "retry.budget.window: "),
        ('[server]\nbacklog = "x"\n', "server.backlog: "),
        ("[server]\nbacklog = 0\n", "server.backlog: "),
        ('[server]\nlog_level = "LOUD"\n', "server.log_level: "),
        ('[server]\ngraceful_shutdown = "soon"\n', "server.graceful_shutdown: "),
        ("[server]\ngraceful_shutdown = 0\n", "server.graceful_shutdown: "),
        ('[server]\naccess_log = "yes"\n', "server.access_log: "),
        ("[server]\ngc_freeze = 3\n", "server.gc_freeze: "),
        ("[server]\nloop = 7\n", "server.loop: "),
        ('[server]\nloop = "mymodule:factory"\n', "server.loop: "),
        ('[server]\nhttp = "fast"\n', "server.http: "),
        ("[timeouts]\nread = nan\n", "timeouts.read: "),
        ("[timeouts]\nconnect = 1e300\n", "timeouts.connect: "),
        ("[pool]\nslow_start = true\n", "pool.slow_start: "),
        ("[pool]\nfailure_penalty = [1]\n", "pool.failure_penalty: "),
        ("[outlier]\nconsecutive_5xx = 2.5\n", "outlier.consecutive_5xx: "),
        ("[discovery]\nuris = [7]\n", "discovery.uris: "),
        ('[discovery]\nuris = ["file:///srv/up\\tstreams.toml"]\n', "discovery.uris: "),
        ("algorithm = []\n", "algorithm: "),
        ("trusted_proxies = [7]\n", "trusted_proxies: "),
        ('listen = "bad host:8080"\n', "listen: "),
        ('listen = "127.0.0.1:\u0668\u0660"\n', "listen: "),
        ("admin = true\n", "admin: "),
        ('verify = "ca\\u0000.pem"\n', "verify: "),
        ("preserve_host = 1\n", "preserve_host: "),
        ("retry_body_limit = 1.5\n", "retry_body_limit: "),
    ],
)
def test_wrong_typed_config_value_exits_2_naming_the_key(
    tmp_path: Path, text: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('upstreams = ["http://a:1"]\n' + text)
    assert main(["proxy", "--config", str(config)]) == 2
    assert one_error_line(capsys).startswith(named)


@pytest.mark.usefixtures("never_serve")
@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ('"http://a\\tb:1"', ["upstreams: url: ", "'\\t'"]),
        ('"http://a:1/v\\n2"', ["upstreams: url: ", "'\\n'"]),
        ('"http://a:1/v\\r\\nHost: x"', ["upstreams: url: ", "'\\r'"]),
        ('"http://a:1/v%zz"', ["upstreams: url: ", "escape"]),
        ('{ url = "http://a:1", weight = 1e308 }', ["upstreams: weight: ", "1e+308"]),
        ('{ url = "http://a:1", weight = "2" }', ["upstreams: weight: ", "'2'"]),
        ('{ url = "http://a:1", weight = true }', ["upstreams: weight: "]),
        ("{ url = 8000 }", ["upstreams: url: "]),
        ('{ url = "http://a:1", tier = "standby" }', ["upstreams: ", "'tier'"]),
        ("[1, 2]", ["upstreams: "]),
    ],
)
def test_bad_upstream_entry_exits_2_with_one_line(
    tmp_path: Path, entry: str, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(f"upstreams = [{entry}]\n")
    assert main(["proxy", "--config", str(config)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(words[0]), line
    for word in words[1:]:
        assert word in line


@pytest.mark.usefixtures("never_serve")
@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"\xff\xfe\x00u\x00p\x00", "--config: "),  # UTF-16, not UTF-8
        (b'upstreams = ["http://a:1"]\n\x89PNG\r\n\x1a\n', "--config: "),
        (b"", "--upstream: "),  # nothing configured: the upstreams are missing
        (b'upstreams = ["http://a:1"]\nx = "\x00"\n', "--config: "),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "--config: "),
        (b'[[upstreams]]\nurl = "http://a:1"\nweight = -2\n', "upstreams: weight: "),
        (b'upstreams = ["http://a:1"]\n[[server]]\nbacklog = 1\n', "server: expected a table"),
    ],
)
def test_unusable_config_file_exits_2_with_one_line(
    tmp_path: Path, content: bytes, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_bytes(content)
    assert main(["proxy", "--config", str(config)]) == 2
    assert one_error_line(capsys).startswith(named)


@pytest.mark.usefixtures("never_serve")
def test_config_that_is_a_directory_or_too_large_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["proxy", "--config", str(tmp_path)]) == 2
    assert one_error_line(capsys).startswith("--config: ")
    monkeypatch.setattr("clientlb._proxy._config.MAX_CONFIG_BYTES", 16)
    config = tmp_path / "proxy.toml"
    config.write_text('upstreams = ["http://a:1"]\n')
    assert main(["proxy", "--config", str(config)]) == 2
    assert one_error_line(capsys).startswith("--config: ")


@pytest.mark.usefixtures("never_serve")
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--upstream", "http://a\tb:1"], "--upstream: "),
        (["--upstream", "http://a:1/x\ny"], "--upstream: "),
        (["--upstream", "http://a:1", "--standby", "http://b:1/ x"], "--standby: "),
        (["--upstream", "http://a:1", "--health-path", "/a\r\nb"], "--health-path: "),
        (["--upstream", "http://a:1", "--listen", "bad host:1"], "--listen: "),
        (["--upstream", "http://a:1", "--admin", "127.0.0.1:x"], "--admin: "),
        (["--discovery", "file:///srv/a\nb.toml"], "--discovery: "),
        (["--upstream", "http://a:1", "--config", "/nonexistent\n.toml"], "--config: "),
    ],
)
def test_flags_with_control_characters_exit_2_with_one_line(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["proxy", *args]) == 2
    assert one_error_line(capsys).startswith(named)


def test_unknown_argument_with_a_line_break_is_reported_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["proxy", "--upstream", "http://a:1", "x\ny"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "x\\ny" in lines[0], lines


def test_health_path_flag_keeps_the_other_health_settings(tmp_path: Path) -> None:
    from clientlb._cli import parser, proxy_settings

    config = tmp_path / "proxy.toml"
    config.write_text('upstreams = ["http://a:1"]\n[health]\nexpected = [204]\ninterval = 2\n')
    args = parser().parse_args(["proxy", "--config", str(config), "--health-path", "/ready"])
    health = proxy_settings(args).health
    assert (health.path, health.interval, health.expected) == ("/ready", 2, frozenset({204}))


def test_access_log_and_a_fractional_grace_period(tmp_path: Path) -> None:
    """One access line per response; SIGTERM waits ``graceful_shutdown`` (0.3 s,
    not truncated to 0) and then answers a request still waiting 503."""
    with Replica("quick") as quick, Replica("slow", delay=5.0) as slow:
        config = tmp_path / "proxy.toml"
        config.write_text(
            f'upstreams = ["{quick.url}"]\n[server]\naccess_log = true\ngraceful_shutdown = 0.3\n'
        )
        running = Running(["--config", str(config)])
        assert httpx.get(running.url + "/seen?x=1").status_code == 200
        stuck = Running(["--upstream", slow.url, "--config", str(config)])
        results: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: results.append(httpx.get(stuck.url + "/slow", timeout=10))
        )
        waiting.start()
        deadline = 100
        while not slow.count() and deadline:  # the request reached the upstream
            waiting.join(0.02)
            deadline -= 1
        started = time.monotonic()
        assert stuck.stop() == 0
        waiting.join(10)
        assert time.monotonic() - started < 3.0  # 0.3 s of grace, not the 5 s reply
        assert results and results[0].status_code == 503
        assert running.stop() == 0
    line = next(line for line in running.lines if "GET /seen?x=1 200" in line)
    assert f"upstream={quick.url} reason=balanced" in line, line
    assert f'attempts="{quick.url} 200"' in line and "bytes_out=" in line, line
