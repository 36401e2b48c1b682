"""least_connections, least_response_time, power_of_two and peak_ewma."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clientlb import Lease, Outcome, Pool, Upstream
from clientlb._core import Member

from .helpers import FakeClock, make_pool, pick_member, urls
from .test_rotation import nginx_reference

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True, database=None)


def weighted(weights: list[int]) -> list[Upstream]:
    return [Upstream(u, weight=w) for u, w in zip(urls(len(weights)), weights, strict=True)]


def turn_order(pool: Pool) -> list[Member]:
    """The members in the order the algorithm offers turns: its rotation starts
    at a random member, so that a fleet of clients does not move in step."""
    _ = pool.members  # builds the candidates
    return list(pool._tiers[0].algorithm.turns.members)  # type: ignore[attr-defined]


def check_in_flight(pool: Pool, leases: list[Lease]) -> None:
    for m in pool._live_members():
        assert m.in_flight == sum(1 for lease in leases if lease.member is m)


# -- least_connections ------------------------------------------------------------


@SETTINGS
@given(
    weights=st.lists(st.integers(1, 4), min_size=2, max_size=7),
    ops=st.lists(st.integers(0, 99), max_size=150),
    seed=st.integers(0, 3),
)
def test_least_connections_takes_idle_turns_or_a_minimum(
    weights: list[int], ops: list[int], seed: int
) -> None:
    """Each pick is nginx's next member in weighted round robin if that one is idle
    (and allowed), and otherwise a member with the fewest in flight per weight."""
    pool = make_pool(weighted(weights), "least_connections", seed=seed)
    members = pool._live_members()
    order = turn_order(pool)
    turns = iter(nginx_reference([m.weight for m in order], len(ops)))
    leases: list[Lease] = []
    for op in ops:
        if op < 45 or not leases:
            exclude: frozenset[Member] = frozenset()
            if op % 5 == 0:  # a retry: one member already tried
                exclude = frozenset({members[op % len(members)]})
            allowed = [m for m in members if m not in exclude]
            best = min(Fraction(m.in_flight + 1, int(m.weight)) for m in allowed)
            turn = order[next(turns)]
            idle_turn = turn.in_flight == 0 and turn in allowed
            lease = pool.pick(exclude=exclude)
            chosen = lease.member
            if idle_turn:
                assert chosen is turn
            else:
                assert chosen in allowed
                assert Fraction(chosen.in_flight, int(chosen.weight)) == best
            leases.append(lease)
        else:
            leases.pop(op % len(leases)).finish()
        check_in_flight(pool, leases)


def test_least_connections_breaks_ties_fairly() -> None:
    ups = urls(4)
    pool = make_pool(ups, "least_connections", seed=5)
    counts = dict.fromkeys(ups, 0)
    for _ in range(4000):
        lease = pool.pick()
        lease.finish()
        counts[lease.upstream.url] += 1
    assert all(850 <= c <= 1150 for c in counts.values()), counts


def sequence_of(pool: Pool, count: int, clock: FakeClock | None = None) -> str:
    """``count`` requests one at a time (10 ms each on ``clock``): the hosts picked."""
    out = []
    for _ in range(count):
        lease = pool.pick()
        if clock is not None:
            clock.advance(0.01)
        lease.responded(200)
        lease.finish()
        out.append(lease.upstream.url.removeprefix("http://"))
    return "".join(out)


def test_least_connections_one_at_a_time_follows_the_weights() -> None:
    ups = [Upstream("http://a", weight=5), Upstream("http://b"), Upstream("http://c")]
    pool = make_pool(ups, "least_connections")
    order = [m.upstream.url.removeprefix("http://") for m in turn_order(pool)]
    weights = [m.weight for m in turn_order(pool)]
    expected = "".join(order[i] for i in nginx_reference(weights, 140))
    got = sequence_of(pool, 140)
    assert got == expected  # nginx's sequence over the rotation
    assert all(sorted(got[i : i + 7]) == sorted("aaaaabc") for i in range(0, 140, 7))


def test_least_connections_busy_turns_go_to_the_least_loaded() -> None:
    """A member busy at its turn does not take it: the least loaded does."""
    pool = make_pool(["http://a", "http://b", "http://c"], "least_connections")
    first, second, third = turn_order(pool)
    held = [pool.pick() for _ in range(3)]  # three turns: each idle, each taken
    assert [lease.member for lease in held] == [first, second, third]
    held.pop().finish()
    turn = pool.pick()  # the first's turn again, but it is busy
    assert turn.member is third
    for lease in [*held, turn]:
        lease.finish()


def test_least_connections_fills_by_weight() -> None:
    pool = make_pool(weighted([1, 3]), "least_connections")
    leases = [pool.pick() for _ in range(8)]
    heavy = sum(1 for lease in leases if lease.member.weight == 3)
    assert heavy == 6


# -- least_response_time ----------------------------------------------------------


def lrt_estimate(m: Member, now: float) -> float:
    """The latency estimate least_response_time documents, written plainly."""
    if m.sampled and not m.in_flight:  # fading since the last sample
        return max(m.ewma, 1e-6) * math.exp(-(now - m.peak_stamp) / 10.0)
    estimate = m.ewma if m.sampled else 0.001  # nothing was sampled at the rebuild
    if m.waiting:  # at least the mean wait of the requests not answered yet
        estimate = max(estimate, now - m.waiting_since / m.waiting)
    return max(estimate, 1e-6)


def lrt_measured(m: Member, now: float) -> float:
    """What turns compare: the estimate without the fading of an idle member."""
    estimate = m.ewma if m.sampled else 0.001
    if m.waiting:
        estimate = max(estimate, now - m.waiting_since / m.waiting)
    return max(estimate, 1e-6)


def lrt_score(m: Member, now: float) -> float:
    return lrt_estimate(m, now) * (m.in_flight + 1) / m.weight


@SETTINGS
@given(
    weights=st.lists(st.integers(1, 3), min_size=2, max_size=6),
    warm=st.lists(st.sampled_from([0.001, 0.004, 0.02, 0.1]), min_size=6, max_size=6),
    ops=st.lists(
        st.tuples(st.integers(0, 99), st.sampled_from([0.0, 0.001, 0.005, 0.05])), max_size=120
    ),
)
def test_least_response_time_takes_fast_idle_turns_or_the_minimum_score(
    weights: list[int], warm: list[float], ops: list[tuple[int, float]]
) -> None:
    """Each pick is nginx's next member in weighted round robin if it is idle and
    its measured latency (not faded) is within 1% of a best member's, and
    otherwise a member of the lowest score; the lazy heap never stores a key
    above the member's key now."""
    clock = FakeClock()
    ups = weighted(weights)
    pool = make_pool(ups, "least_response_time", clock=clock, outlier=None)
    members = pool._live_members()
    order = turn_order(pool)
    turns = iter(nginx_reference([m.weight for m in order], len(ops) + len(warm)))
    for up, latency in zip(ups, warm, strict=False):
        lease = pick_member(pool, up.url)
        next(turns)
        clock.advance(latency)
        lease.responded(200)
        lease.finish()
    algorithm = pool._tiers[0].algorithm
    leases: list[Lease] = []
    for op, step in ops:
        clock.advance(step)
        now = clock()
        if op < 40 or not leases:
            scores = {m: lrt_score(m, now) for m in members}
            best = min(scores.values())
            tops = [m for m in members if scores[m] <= best * (1 + 1e-9)]
            turn = order[next(turns)]
            reach = [1.01 * lrt_measured(m, now) for m in tops]
            idle_turn = not turn.in_flight and turn not in tops
            estimate = lrt_measured(turn, now)
            lease = pool.pick()
            chosen = lease.member
            if idle_turn and estimate < min(reach) * (1 - 1e-9):
                assert chosen is turn
            elif chosen is not turn or not idle_turn:
                assert chosen in tops
            else:
                assert estimate <= max(reach) * (1 + 1e-9)
            leases.append(lease)
        elif op < 70:
            lease = leases[op % len(leases)]
            lease.responded(503 if op % 10 == 0 else 200)
        else:
            leases.pop(op % len(leases)).finish()
        check_in_flight(pool, leases)
        for m in members:  # stored keys are lower bounds of the keys now
            assert algorithm.keys[algorithm.pos[m]] <= algorithm._key(m, now) + 1e-12


def serve_sequentially(
    pool: Pool, clock: FakeClock, latency: dict[str, float], count: int
) -> dict[str, int]:
    counts = dict.fromkeys(latency, 0)
    for _ in range(count):
        lease = pool.pick()
        clock.advance(latency[lease.upstream.url])
        lease.responded(200)
        lease.finish()
        counts[lease.upstream.url] += 1
    return counts


def test_least_response_time_turns_go_by_measured_latency_not_by_fading() -> None:
    """A light member twice as slow as a heavy one, idle for a while: its faded
    estimate soon matches the heavy one's, but it is not as fast, so it takes no
    turn; it gets a request again once its faded score is the lowest."""
    clock = FakeClock()
    fast, slow = Upstream("http://fast", weight=2), Upstream("http://slow", weight=1)
    pool = make_pool([fast, slow], "least_response_time", clock=clock, outlier=None)
    latency = {fast.url: 0.010, slow.url: 0.020}
    for up in (fast, slow):
        lease = pick_member(pool, up.url)
        clock.advance(latency[up.url])
        lease.responded(200)
        lease.finish()
    start = clock()
    # one request at a time to the fast member: every third pick is the slow
    # member's turn. Its estimate fades below the fast one's 10 ms after about
    # 7 s (20 ms * exp(-t / 10 s)); its score (per weight 1) below the fast
    # one's 5 ms after about 14 s.
    first = None
    while clock() - start < 16.0:
        lease = pool.pick()
        if lease.upstream.url == slow.url and first is None:
            first = clock() - start
        clock.advance(latency[lease.upstream.url])
        lease.responded(200)
        lease.finish()
    assert first is not None
    assert 13.5 <= first <= 14.5


def test_least_response_time_prefers_the_fast_member() -> None:
    clock = FakeClock()
    latency = {"http://slow": 0.200, "http://fast": 0.010, "http://middle": 0.050}
    pool = make_pool(latency, "least_response_time", clock=clock)
    counts = serve_sequentially(pool, clock, latency, 200)
    assert counts["http://fast"] >= 195
    assert counts["http://slow"] <= 2


def test_least_response_time_spreads_when_the_fast_member_is_busy() -> None:
    clock = FakeClock()
    latency = {"http://fast": 0.010, "http://slow": 0.045}
    pool = make_pool(latency, "least_response_time", clock=clock)
    serve_sequentially(pool, clock, latency, 10)
    held = [pool.pick() for _ in range(10)]
    fast = sum(1 for lease in held if lease.upstream.url == "http://fast")
    # 0.010 * (k + 1) overtakes 0.045 around k = 4..5, with the slow one loaded too
    assert 6 <= fast <= 9


# -- power_of_two and peak_ewma -------------------------------------------------------


@pytest.mark.parametrize("name", ["power_of_two", "peak_ewma"])
@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("sampled", [False, True])
def test_two_choices_are_distinct_and_compared(name: str, n: int, sampled: bool) -> None:
    clock = FakeClock()
    ups = urls(n)
    pool = make_pool(ups, name, clock=clock, seed=n)
    if sampled:
        for url in ups:
            lease = pick_member(pool, url)
            clock.advance(0.05)
            lease.responded(200)
            lease.finish()
    held = [pick_member(pool, ups[0]) for _ in range(3)]
    seen = set()
    for _ in range(300):
        lease = pool.pick()
        lease.finish(Outcome.CANCELLED)
        seen.add(lease.upstream.url)
    assert ups[0] not in seen  # drawn twice with replacement it would win sometimes
    assert seen == set(ups[1:])
    for lease in held:
        lease.finish()


def test_power_of_two_with_one_candidate_left() -> None:
    ups = urls(2)
    pool = make_pool(ups, "power_of_two")
    lease = pick_member(pool, ups[1])
    assert lease.member.in_flight == 1


@pytest.mark.parametrize("name", ["least_response_time", "peak_ewma"])
@pytest.mark.parametrize("failure", ["connect", "503", "504"])
def test_a_member_failing_fast_never_looks_quicker(name: str, failure: str) -> None:
    clock = FakeClock()
    pool = make_pool(["http://failing", "http://healthy"], name, clock=clock, outlier=None, seed=2)
    failing_picks = 0
    for _ in range(30):
        lease = pool.pick()
        if lease.upstream.url == "http://failing":
            failing_picks += 1
            clock.advance(0.001)
            if failure == "connect":
                lease.finish(Outcome.CONNECT_FAILURE)
            else:
                lease.responded(int(failure))
                lease.finish()
        else:
            clock.advance(0.3)
            lease.responded(200)
            lease.finish()
    assert failing_picks <= 1  # at most the first, unmeasured, probe


@pytest.mark.parametrize("name", ["least_response_time", "peak_ewma"])
def test_failure_penalty_is_configurable(name: str) -> None:
    clock = FakeClock()
    pool = make_pool(
        ["http://failing", "http://healthy"], name, clock=clock, outlier=None, failure_penalty=5.0
    )
    lease = pick_member(pool, "http://failing")
    clock.advance(0.001)
    lease.finish(Outcome.RESET)
    lease = pick_member(pool, "http://healthy")
    clock.advance(2.0)
    lease.responded(200)
    lease.finish()
    for _ in range(20):
        lease = pool.pick()
        lease.finish(Outcome.CANCELLED)
        assert lease.upstream.url == "http://healthy"


def test_a_slow_timeout_counts_its_full_time() -> None:
    clock = FakeClock()
    pool = make_pool(["http://a"], "least_response_time", clock=clock, outlier=None)
    lease = pool.pick()
    clock.advance(30.0)
    lease.finish(Outcome.TIMEOUT)
    assert lease.member.ewma == pytest.approx(30.0)


@pytest.mark.parametrize("name", ["least_connections", "least_response_time"])
def test_a_fleet_of_clients_does_not_move_in_step(name: str) -> None:
    """Each client's rotation starts at a random member: 100 clients' first picks
    over 100 upstreams spread out instead of all landing on the first."""
    firsts = [make_pool(urls(100), name, seed=s).pick().upstream.url for s in range(100)]
    assert max(firsts.count(u) for u in set(firsts)) <= 6
    assert len(set(firsts)) >= 50


def test_idle_unsampled_members_cost_nothing_as_time_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Never-sampled idle members have constant heap keys: with 1,000 of them and
    the clock moving, a pick refreshes a handful of keys, not hundreds."""
    from clientlb._core._algorithms._load import LeastResponseTime

    clock = FakeClock()
    pool = make_pool(urls(1000), "least_response_time", clock=clock)
    algorithm = pool._tiers[0].algorithm
    calls = 0
    key = LeastResponseTime._key

    def counted(self: LeastResponseTime, m: Member, now: float) -> float:
        nonlocal calls
        calls += 1
        return key(self, m, now)

    _ = pool.members
    monkeypatch.setattr(LeastResponseTime, "_key", counted)
    for _ in range(200):
        clock.advance(0.01)
        lease = pool.pick()
        clock.advance(0.001)
        lease.responded(200)
        lease.finish()
    assert isinstance(algorithm, LeastResponseTime)
    assert calls / 200 < 10
