"""``clientlb demo``: a short story told in plain lines (stdout is a pipe), and
``--compare``; the plot and the summary's figures without servers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clientlb._core import ALGORITHMS
from clientlb._demo import PHASES
from clientlb._demo._compare import draw
from clientlb._demo._story import Summary
from clientlb._demo._view import summary_lines

ROOT = Path(__file__).resolve().parents[1]


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clientlb", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.integration
def test_a_short_demo_tells_every_phase_and_sums_up() -> None:
    result = demo("--duration", "3.6")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert re.search(r"^status page: http://127\.0\.0\.1:\d+/status", out, re.M)
    assert "library's defaults" in out
    for number, phase in enumerate(PHASES, 1):
        assert f"phase {number}/{len(PHASES)}: {phase.title}: " in out
        assert f"end of phase {number} " in out
    assert re.search(r"^\[\s*\d+\.\d+s\]   primary-1 \d+%", out, re.M)  # the periodic lines
    summary = out[out.index("Summary: least_response_time") :]
    for name in ("primary-1", "primary-2", "primary-3", "standby"):
        assert re.search(rf"^  {name} +(primary|standby) +\d+ +\d+% +\d+ +\d+$", summary, re.M)
    assert "client-visible errors: 0\n" in summary
    assert re.search(r"failover: \d+ requests? (was|were) retried within", summary)
    back = re.search(r"fail-back: a primary answered (\d+\.\d+) s after", summary)
    assert back is not None, summary
    assert float(back.group(1)) < 1.5  # probes: about 0.5 s after listening, more on a busy machine


@pytest.mark.integration
def test_compare_prints_one_row_per_algorithm() -> None:
    result = demo("--compare", "--duration", "0.9")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(
        i for i, line in enumerate(lines) if line.split()[:3] == ["algorithm", "p50", "p99"]
    )
    assert "primary-1  primary-2  primary-3  standby" in lines[header]
    rows = [line.split() for line in lines[header + 1 : header + 1 + len(ALGORITHMS)]]
    assert [row[0] for row in rows] == list(ALGORITHMS)
    for row in rows:
        assert row[2:5:2] == ["ms", "ms"]  # p50, p99 measured
        assert all(cell.endswith("%") for cell in row[5:10])
    assert "--plot FILE" in result.stdout


def summary(**changes: Any) -> Summary:
    rows = [
        {"name": n, "tier": t, "requests": 10, "share": s, "failures": 0, "ejections": 0}
        for n, t, s in [
            ("primary-1", "primary", 0.3),
            ("primary-2", "primary", 0.3),
            ("primary-3", "primary", 0.2),
            ("standby", "standby", 0.2),
        ]
    ]
    values: dict[str, Any] = {
        "algorithm": "round_robin",
        "duration": 6.0,
        "rows": rows,
        "answers": 40,
        "errors": 0,
        "p50": 0.001,
        "p99": 0.05,
        "slow_share": 0.25,
        "crash_retried": 1,
        "crash_window": 0.002,
        "failover_retried": 5,
        "failover_window": 0.02,
        "failover_slowest": 0.008,
        "fail_back": 0.31,
        "standby_last": 0.3,
    }
    return Summary(**{**values, **changes})


def test_the_summary_says_what_was_not_measured() -> None:
    text = "\n".join(summary_lines(summary(crash_retried=0, fail_back=None)))
    assert "crash: no request was retried" in text
    assert "fail-back: no primary answered again before the story ended" in text
    text = "\n".join(summary_lines(summary()))
    assert "failover: 5 requests were retried within 20.0 ms" in text
    assert "fail-back: a primary answered 0.31 s after" in text


def test_no_matplotlib_no_plot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert draw([summary()], str(tmp_path / "x.png")).startswith("no plot: matplotlib")
    assert not (tmp_path / "x.png").exists()


def test_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "compare.png"
    assert draw([summary(), summary(algorithm="peak_ewma")], str(path)) == f"plot written to {path}"
    assert path.read_bytes().startswith(b"\x89PNG")


def test_the_demo_s_servers_hold_distinct_ports_until_they_serve() -> None:
    from clientlb._demo._servers import LoopbackServer

    servers = [LoopbackServer(app=None) for _ in range(200)]
    try:
        assert len({s.port for s in servers}) == 200
    finally:
        for s in servers:
            s.stop()
    assert all(s._reserved is None for s in servers)
