"""A deterministic fleet simulator: many clients, each with its own real ``Pool``,
over many simulated upstreams, on one simulated clock.

Client-side balancing scales with the callers: a fleet is many independent
clients, each with its own view, and what happens between them (herds, stale
estimates) only shows at a scale no one machine runs for real. Here the pools
and algorithms are the library's own (``clientlb._core``), driven through
``AttemptPlan`` as the transports drive them; only the network and the servers
are simulated (``_servers.py``). ``python -m benchmarks.simulate --help``.

Modules: ``_engine`` (clock and event heap), ``_servers`` (workers, queues,
changes), ``_clients`` (pool clients, the oracle), ``_fleet`` (one run),
``_study`` (the scenarios), ``_report`` (tables and figures).
"""
