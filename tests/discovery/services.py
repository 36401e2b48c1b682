"""Real registries for the discovery tests: dnsmasq and etcd on loopback ports.

Each server runs as a child process with its files in a temporary directory and
is always stopped (terminate, then kill) by the fixture that started it. When the
program is not installed the fixture skips, saying which Debian package to get.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..waiting import wait_for

DNSMASQ = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None
)
ETCD = shutil.which("etcd")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free for both TCP and UDP (DNS listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, other) as check:
            try:
                check.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class Dnsmasq:
    """dnsmasq answering A records from a hosts file and SRV records from flags."""

    def __init__(self, workdir: Path) -> None:
        if DNSMASQ is None:
            pytest.skip("dnsmasq is not installed (Debian: apt-get install dnsmasq-base)")
        self.dir = workdir
        self.hosts = workdir / "hosts"
        self.hosts.write_text("")
        self.port = free_port(socket.SOCK_DGRAM)
        self.srv: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_hosts(self, records: dict[str, list[str]]) -> None:
        """Replace the A records and make dnsmasq re-read them (SIGHUP)."""
        lines = [f"{ip} {name}\n" for name, ips in records.items() for ip in ips]
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.replace(self.hosts)
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def set_srv(self, records: list[tuple[str, str, int, int, int]]) -> None:
        """SRV records ``(name, target, port, priority, weight)``: dnsmasq reads them
        only at start, so this restarts it on the same port."""
        self.srv = [",".join(map(str, r)) for r in records]
        if self.process is not None:
            self.stop()
            self.start()

    def start(self) -> Dnsmasq:
        command = [
            DNSMASQ or "dnsmasq",
            "--no-daemon",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={self.hosts}",
            "--local-ttl=0",  # the provider then asks again after its min_ttl
            "--local=/test/",  # answer .test names here: NODATA, NXDOMAIN, never REFUSED
            "--pid-file=",
            f"--user={getpass.getuser()}",
            *(f"--srv-host={r}" for r in self.srv),
        ]
        log = open(self.dir / "dnsmasq.log", "ab")  # noqa: SIM115 - closed with the process
        with log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        wait_for(self._answers, "dnsmasq to answer", timeout=10)
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"dnsmasq exited: {(self.dir / 'dnsmasq.log').read_text()[-500:]}")
        import dns.message
        import dns.query

        query = dns.message.make_query("probe.invalid", "A")
        try:
            dns.query.udp(query, "127.0.0.1", timeout=0.2, port=self.port)
        except (OSError, dns.exception.Timeout):
            return False
        return True

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


class EtcdServer:
    """A single-member etcd with its data in a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        if ETCD is None:
            pytest.skip("etcd is not installed (Debian: apt-get install etcd-server)")
        out = subprocess.run([ETCD, "--version"], capture_output=True, text=True).stdout
        found = re.search(r"etcd Version: (\d+)\.(\d+)", out)
        if found is None or (int(found[1]), int(found[2])) < (3, 4):
            pytest.skip(f"etcd 3.4 or later is needed (JSON API at /v3); found {out[:40]!r}")
        self.dir = workdir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> EtcdServer:
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [
            ETCD or "etcd",
            "--name=test",
            f"--data-dir={self.dir / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--log-level=error",
        ]
        log = open(self.dir / "etcd.log", "ab")  # noqa: SIM115 - closed with the process
        with log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        wait_for(self._healthy, "etcd to be healthy", timeout=15)
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"etcd exited: {(self.dir / 'etcd.log').read_text()[-500:]}")
        try:
            return self.http.get(f"{self.url}/health").json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def close(self) -> None:
        self.stop()
        self.http.close()

    # -- the v3 JSON API ------------------------------------------------------------

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.url}/v3/{path}", json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def put(self, key: str, value: object, lease: int | None = None) -> None:
        raw = value if isinstance(value, str) else json.dumps(value)
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(raw)}
        if lease is not None:
            body["lease"] = str(lease)
        self.call("kv/put", body)

    def delete(self, key: str) -> None:
        self.call("kv/deleterange", {"key": _b64(key)})

    def grant(self, ttl: int) -> int:
        return int(self.call("lease/grant", {"TTL": str(ttl)})["ID"])

    def revoke(self, lease: int) -> None:
        self.call("lease/revoke", {"ID": str(lease)})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A temporary directory that a server dropping privileges can still read."""
    path = Path(tempfile.mkdtemp(prefix="clientlb-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
