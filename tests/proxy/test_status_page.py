"""The status page in a real browser: headless Chromium (Debian's ``chromium``
package; ``make test`` installs it) reads the page served by uvicorn for a pool
of real replicas, runs its script, and shows a replica that stopped as ejected."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clientlb import BalancingTransport, Metrics, OutlierDetection, Pool, admin_app

from ..replicas import Replica
from ..waiting import wait_for
from .servers import Running, serve

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium found: install Debian's chromium package (make services does)")


@pytest.fixture
def fleet() -> Iterator[list[Replica]]:
    # The doomed replica answers first: least_response_time sends it the next
    # request once it stops, so its ejection does not wait on its estimate fading.
    started = [
        Replica("fast", delay=0.01).start(),
        Replica("slower", delay=0.03).start(),
        Replica("doomed").start(),
        Replica("standby").start(),
    ]
    yield started
    for replica in started:
        replica.stop()


def chromium(browser: str, profile: Path, *args: str) -> str:
    """Run headless Chromium to the end of its virtual time budget; its stdout."""
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_page_shows_an_ejected_replica(
    browser: str, fleet: list[Replica], tmp_path: Path
) -> None:
    fast, slower, doomed, standby = fleet
    pool = Pool(
        [fast.url, slower.url, doomed.url],
        [standby.url],
        "least_response_time",
        outlier=OutlierDetection(consecutive_local_failures=1, probe_after=None),
    )
    metrics = Metrics()
    transport = BalancingTransport(pool, metrics=metrics)
    with (
        httpx.Client(transport=transport, base_url="http://svc") as client,
        serve(admin_app(transport)) as admin,
    ):
        for i in range(30):
            assert client.get(f"/warm/{i}").status_code == 200
        doomed.stop()
        states = {m.url: m.state for m in pool.members}
        assert states[doomed.url] == "healthy"  # nobody has noticed yet
        wait_for(
            lambda: (
                client.get("/after").status_code == 200
                and {m.url: m.state for m in pool.members}[doomed.url] == "ejected"
            ),
            "the stopped replica ejected",
        )
        for i in range(20):
            client.get(f"/more/{i}")

        dom = chromium(browser, tmp_path / "profile", "--dump-dom", f"{admin.url}/status")
        row = re.search(rf'<tr data-upstream="{re.escape(doomed.url)}" data-state="(\w+)"', dom)
        assert row is not None and row.group(1) == "ejected", dom[:3000]
        for replica in (fast, slower, standby):
            assert f'data-upstream="{replica.url}" data-state="healthy"' in dom
        assert 'data-event="ejected"' in dom  # in the recent events
        assert "includes failure penalties" in dom  # its estimate holds the penalties
        assert "least_response_time" in dom and "lowest latency estimate" in dom
        renders = re.search(r'<body data-renders="(\d+)"', dom)
        assert renders is not None and int(renders.group(1)) >= 2  # refreshed by fetch

        shot = tmp_path / "status.png"
        chromium(
            browser,
            tmp_path / "profile",
            f"--screenshot={shot}",
            "--window-size=1200,800",
            "--hide-scrollbars",
            f"{admin.url}/status",
        )
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    transport.close()


def test_the_page_shows_the_proxys_connections(
    browser: str, replicas: list[Replica], tmp_path: Path
) -> None:
    """Behind ``clientlb proxy``, the header counts its open client connections
    and the WebSockets it relays (``/stats``' ``"proxy"``)."""
    running = Running(["--admin", "127.0.0.1:0", "--upstream", replicas[0].url])
    held: list[socket.socket] = []
    try:
        host, port = running.url.removeprefix("http://").rsplit(":", 1)
        for _ in range(2):
            sock = socket.create_connection((host, int(port)), timeout=5)
            held.append(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        dom = chromium(browser, tmp_path / "profile", "--dump-dom", f"{running.admin}/status")
        header = re.search(r'<span id="pools" class="muted">([^<]*)</span>', dom)
        assert header is not None, dom[:3000]
        assert header.group(1).endswith(" 2 client connections \u00b7 0 WebSockets"), header.group(
            1
        )
    finally:
        for sock in held:
            sock.close()
        assert running.stop() == 0
