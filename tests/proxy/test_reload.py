"""SIGHUP reloads ``clientlb proxy``'s config file: what a reload decides (no
servers), then a real proxy process with real replicas."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clientlb._proxy._config import Settings, build
from clientlb._proxy._reload import RESTART_KEYS, plan

from ..replicas import Replica
from ..waiting import wait_for
from .servers import Running

BASE = {"upstreams": ["http://a:1", "http://b:2"]}


def test_restart_keys_come_from_the_schema() -> None:
    assert set(RESTART_KEYS) == {
        "listen",
        "admin",
        "admin_token_file",
        "verify",
        "limits.upstream_connections",
        "limits.upstream_idle_timeout",
        "server.loop",
        "server.backlog",
        "server.gc_freeze",
    }


def test_new_weights_and_upstreams_change_the_running_pool() -> None:
    old = build(BASE)
    new = build({"upstreams": ["http://a:1", {"url": "http://c:3", "weight": 3}]})
    change = plan(old, new)
    assert (change.new_pool, change.membership, change.restart) == (False, True, ())
    assert change.settings == new
    weights = build({"upstreams": ["http://a:1", {"url": "http://b:2", "weight": 2}]})
    assert plan(old, weights).membership and not plan(old, weights).new_pool


@pytest.mark.parametrize(
    "extra",
    [
        {"algorithm": "random"},
        {"retry": {"max_retries": 0}},
        {"outlier": {"consecutive_5xx": 3}},
        {"health": {"path": "/up"}},
        {"pool": {"slow_start": 10}},
        {"discovery": {"uris": ["file:///srv/up.toml"]}},
    ],
    ids=lambda extra: next(iter(extra)),
)
def test_a_pool_option_builds_a_new_pool(extra: dict[str, object]) -> None:
    change = plan(build(BASE), build({**BASE, **extra}))
    assert change.new_pool and not change.membership


def test_live_and_new_connection_keys_need_no_new_pool() -> None:
    new = build(
        {
            **BASE,
            "limits": {"header_timeout": 2, "client_connections": 10},
            "timeouts": {"read": 5},
            "server": {"graceful_shutdown": 3, "access_log": True},
            "preserve_host": True,
        }
    )
    change = plan(build(BASE), new)
    assert (change.new_pool, change.restart, change.settings) == (False, (), new)


def test_restart_keys_keep_their_running_values() -> None:
    old = build({**BASE, "listen": "127.0.0.1:1", "limits": {"upstream_connections": 5}})
    new = build(
        {
            **BASE,
            "listen": "127.0.0.1:2",
            "limits": {"upstream_connections": 6, "header_timeout": 3},
            "server": {"backlog": 9, "log_level": "debug"},
        }
    )
    change = plan(old, new)
    assert change.restart == ("listen", "limits.upstream_connections", "server.backlog")
    running: Settings = change.settings
    assert running.listen == ("127.0.0.1", 1)
    assert running.limits.upstream_connections == 5
    assert running.limits.header_timeout == 3  # the client-side limit still applies
    assert running.server["backlog"] == 2048 and running.server["log_level"] == "debug"


# -- a real proxy process ----------------------------------------------------------


def config_for(*replicas: Replica, algorithm: str = "round_robin") -> str:
    urls = ", ".join(f'"{r.url}"' for r in replicas)
    return f'upstreams = [{urls}]\nalgorithm = "{algorithm}"\n'


@pytest.fixture
def pair() -> Iterator[tuple[Replica, Replica]]:
    a, b = Replica("a").start(), Replica("b").start()
    yield a, b
    a.stop()
    b.stop()


def hup(running: Running, after: str) -> None:
    """SIGHUP, then wait for the log line ``after`` to appear once more."""
    seen = sum(after in line for line in running.lines)
    running.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: sum(after in line for line in list(running.lines)) > seen, after)


def served_by(client: httpx.Client, url: str, n: int = 6) -> set[str]:
    return {json.loads(client.get(url + "/who").content)["replica"] for _ in range(n)}


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ["round_robin", "least_connections"])
def test_a_request_in_flight_finishes_across_a_reload(
    tmp_path: Path, pair: tuple[Replica, Replica], algorithm: str
) -> None:
    """The old upstream keeps its request in flight to the end, whether the reload
    changes the running pool (same algorithm) or builds a new one."""
    a, b = pair
    config = tmp_path / "proxy.toml"
    config.write_text(config_for(a))
    running = Running(["--config", str(config), "--admin", "127.0.0.1:0"])
    try:
        result: list[httpx.Response] = []

        def slow_request() -> None:
            result.append(httpx.get(running.url + "/stream?chunks=3", timeout=20))

        in_flight = threading.Thread(target=slow_request)
        in_flight.start()
        wait_for(lambda: a.count(path="/stream"), "the request to reach a")
        with httpx.Client() as client:  # one keep-alive connection across the reload
            assert served_by(client, running.url) == {"a"}
            config.write_text(config_for(b, algorithm=algorithm))
            hup(running, "reloaded the config")
            assert served_by(client, running.url) == {"b"}
        assert httpx.get(running.url + "/who").json()["replica"] == "b"
        assert in_flight.is_alive()  # still waiting for a's last chunk
        a.release.set()
        in_flight.join(20)
        assert result and result[0].status_code == 200
        assert result[0].text == "chunk\nchunk\nend\n"
        stats = httpx.get(running.admin + "/stats").json()
        assert stats["algorithm"] == algorithm
        assert [u["url"] for u in stats["upstreams"]] == [b.url]
    finally:
        assert running.stop() == 0


@pytest.mark.integration
def test_new_weights_apply_and_survivors_keep_their_counts(
    tmp_path: Path, pair: tuple[Replica, Replica]
) -> None:
    a, b = pair
    config = tmp_path / "proxy.toml"
    config.write_text(config_for(a, b, algorithm="weighted_round_robin"))
    running = Running(["--config", str(config), "--admin", "127.0.0.1:0"])
    try:
        with httpx.Client() as client:
            served_by(client, running.url, 4)
            config.write_text(
                f'algorithm = "weighted_round_robin"\nupstreams = ["{a.url}", '
                f'{{ url = "{b.url}", weight = 3 }}]\n'
            )
            hup(running, "reloaded the config")
            a.reset()
            b.reset()
            served_by(client, running.url, 8)
        assert (a.count(), b.count()) == (2, 6)
        stats = httpx.get(running.admin + "/stats").json()
        assert [u["weight"] for u in stats["upstreams"]] == [1, 3]
        assert [u["requests"] for u in stats["upstreams"]] == [4, 8]  # kept across
    finally:
        assert running.stop() == 0


@pytest.mark.integration
def test_a_broken_file_keeps_the_running_config_and_logs_one_line(
    tmp_path: Path, pair: tuple[Replica, Replica]
) -> None:
    a, b = pair
    config = tmp_path / "proxy.toml"
    config.write_text(config_for(a))
    running = Running(["--config", str(config)])
    try:
        for broken in (
            f'upstreams = ["{b.url}"\n',  # not TOML
            f'upstreams = ["{b.url}"]\n[health]\ninterval = 0\n',  # a bad value
        ):
            config.write_text(broken)
            hup(running, "reload failed")
            assert httpx.get(running.url + "/who").json()["replica"] == "a"
        failures = [line for line in running.lines if "reload failed" in line]
        assert len(failures) == 2
        assert "WARNING clientlb.proxy" in failures[0] and "--config" in failures[0]
        assert failures[1].rstrip().endswith("health.interval: must be > 0, got 0")
        assert running.proc.poll() is None
    finally:
        assert running.stop() == 0


@pytest.mark.integration
def test_a_restart_only_change_is_kept_and_named(
    tmp_path: Path, pair: tuple[Replica, Replica]
) -> None:
    a, b = pair
    config = tmp_path / "proxy.toml"
    config.write_text(config_for(a))
    running = Running(["--config", str(config)])
    try:
        config.write_text(config_for(b) + "[server]\nbacklog = 16\n")
        hup(running, "reloaded the config")
        assert any("server.backlog changed, which takes a restart" in x for x in running.lines)
        assert httpx.get(running.url + "/who").json()["replica"] == "b"
    finally:
        assert running.stop() == 0


@pytest.mark.integration
def test_sighup_without_a_config_file_changes_nothing(pair: tuple[Replica, Replica]) -> None:
    """SIGHUP reads the flags again: nothing changes, and the process lives on."""
    a, _ = pair
    running = Running(["--upstream", a.url])
    try:
        hup(running, "the config is unchanged")
        assert httpx.get(running.url + "/who").json()["replica"] == "a"
    finally:
        assert running.stop() == 0


@pytest.mark.integration
def test_health_checks_go_on_after_a_reload_that_keeps_the_pool(
    tmp_path: Path, pair: tuple[Replica, Replica], standby: Replica
) -> None:
    a, b = pair
    checks = '[health]\npath = "/health"\ninterval = 0.05\nfall = 1\nrise = 1\n'
    config = tmp_path / "proxy.toml"
    config.write_text(config_for(a, b) + checks)
    running = Running(["--config", str(config), "--admin", "127.0.0.1:0"])
    try:

        def states() -> dict[str, str]:
            stats = httpx.get(running.admin + "/stats").json()
            return {u["url"]: u["state"] for u in stats["upstreams"]}

        config.write_text(config_for(a, b, standby) + checks)
        hup(running, "reloaded the config")
        assert not any("a new pool" in line for line in running.lines)
        assert set(states()) == {a.url, b.url, standby.url}
        b.health_status = 503
        wait_for(lambda: states()[b.url] == "down", "b taken out by a check")
        assert states()[a.url] == "healthy"
    finally:
        assert running.stop() == 0
