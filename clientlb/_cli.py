"""The ``clientlb`` command: ``clientlb proxy ...`` and ``clientlb demo ...``.

Bad flags or configuration end the process with status 2 and one line on stderr
that names the problem; nothing starts listening before everything is checked.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._core import ALGORITHMS, ConfigError
from ._proxy._config import LOG_LEVELS
from ._proxy._config import one_line as one_line

PROG = "clientlb"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def _algorithm(value: str) -> str:
    if value not in ALGORITHMS:
        raise argparse.ArgumentTypeError(
            f"unknown algorithm {value!r}; one of {', '.join(ALGORITHMS)}"
        )
    return value


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog=PROG, description="An in-process load balancer: forwarding proxy and demo.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    proxy = commands.add_parser("proxy", help="run the forwarding proxy")
    proxy.add_argument(
        "--listen", metavar="HOST:PORT", help="where to listen (default 127.0.0.1:8080)"
    )
    proxy.add_argument(
        "--upstream",
        metavar="URL",
        action="append",
        default=[],
        help="a primary upstream (repeat for more)",
    )
    proxy.add_argument(
        "--standby",
        metavar="URL",
        action="append",
        default=[],
        help="a standby upstream, used only when no primary can serve",
    )
    proxy.add_argument(
        "--algorithm",
        type=_algorithm,
        metavar="NAME",
        help=f"one of {', '.join(ALGORITHMS)} (default round_robin)",
    )
    proxy.add_argument(
        "--hash-on",
        metavar="SPEC",
        help="the key of ip_hash and consistent_hash: header:NAME or cookie:NAME "
        "(a request without it hashes on the client address)",
    )
    proxy.add_argument(
        "--sticky-cookie",
        metavar="NAME",
        help="pin each client to the upstream that answered it with cookie NAME "
        "(a random secret per process unless [sticky] secret is set)",
    )
    proxy.add_argument(
        "--config",
        metavar="FILE.toml",
        help="settings file (docs/config.md); flags override it; SIGHUP reloads it",
    )
    proxy.add_argument(
        "--check-config",
        action="store_true",
        help="check the file and flags, print one line, exit (0: good, 2: bad)",
    )
    proxy.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration (file, flags, defaults) as TOML, exit",
    )
    proxy.add_argument("--health-path", metavar="PATH", help="run active health checks on PATH")
    proxy.add_argument(
        "--admin", metavar="HOST:PORT", help="admin listener: /status, /stats, /metrics"
    )
    proxy.add_argument(
        "--admin-token-file",
        metavar="FILE",
        help="a file holding the bearer token that allows the admin's POST /drain, "
        "/enable and /weight (read-only without it)",
    )
    proxy.add_argument(
        "--trusted-proxy",
        metavar="NETWORK",
        action="append",
        default=[],
        help="believe X-Forwarded-For from this address or network (repeat)",
    )
    proxy.add_argument(
        "--preserve-host",
        action="store_true",
        default=None,
        help="send the client's Host header upstream",
    )
    proxy.add_argument("--log-level", choices=LOG_LEVELS)
    proxy.add_argument(
        "--discovery",
        metavar="URI",
        action="append",
        default=[],
        help="keep the upstreams current from dns://NAME:PORT, etcd://HOST:PORT/PREFIX "
        "or file://PATH (repeat for more)",
    )

    demo = commands.add_parser("demo", help="watch the algorithms balance live replicas")
    demo.add_argument(
        "--algorithm",
        type=_algorithm,
        default="least_response_time",
        metavar="NAME",
        help="the algorithm to watch (default least_response_time)",
    )
    demo.add_argument(
        "--duration",
        type=_positive,
        metavar="SECONDS",
        help="length of the story (default 30; with --compare, per algorithm, default 6)",
    )
    demo.add_argument(
        "--compare",
        action="store_true",
        help="tell the story once per algorithm and print the figures side by side",
    )
    demo.add_argument(
        "--plot",
        metavar="FILE.png",
        help="with --compare: draw the figures into FILE.png (needs matplotlib)",
    )
    return top


def proxy_settings(args: argparse.Namespace) -> Any:
    """Settings from ``--config`` and the flags (flags win)."""
    from ._proxy._config import Settings, build, check, load_file

    settings = Settings()
    if args.config:
        settings = build(load_file(args.config), settings)
    flags: dict[str, Any] = {}
    if args.listen is not None:
        flags["listen"] = args.listen
    if args.admin is not None:
        flags["admin"] = args.admin
    if args.admin_token_file is not None:
        flags["admin_token_file"] = args.admin_token_file
    if args.upstream:
        flags["upstreams"] = args.upstream
    if args.standby:
        flags["standbys"] = args.standby
    if args.algorithm is not None:
        flags["algorithm"] = args.algorithm
    if args.hash_on is not None:
        flags["hash_on"] = args.hash_on
    if args.sticky_cookie is not None:
        sticky = settings.sticky
        kept = {} if sticky is None else {f: getattr(sticky, f) for f in _STICKY_FIELDS}
        flags["sticky"] = {**kept, "name": args.sticky_cookie}
    if args.trusted_proxy:
        flags["trusted_proxies"] = args.trusted_proxy
    if args.preserve_host is not None:
        flags["preserve_host"] = True
    if args.discovery:
        flags["discovery"] = {"uris": args.discovery}
    if args.health_path is not None:
        health = (
            {
                f: getattr(settings.health, f)
                for f in ("interval", "timeout", "rise", "fall", "expected")
            }
            if settings.health is not None
            else {}
        )
        flags["health"] = {**health, "path": args.health_path}
    if args.log_level is not None:
        flags["server"] = {"log_level": args.log_level}
    try:
        return check(build(flags, settings))
    except ConfigError as exc:
        field = exc.field
        given = (
            (field == "hash_on" and args.hash_on is not None)
            or (field == "sticky.name" and args.sticky_cookie is not None)
            or (field == "admin_token_file" and args.admin_token_file is not None)
        )
        if field in _FLAGS or given:
            raise ConfigError(_flag_name(field), str(exc).split(": ", 1)[-1]) from None
        raise


_FLAGS = {
    "upstreams": "--upstream",
    "standbys": "--standby",
    "listen": "--listen",
    "admin": "--admin",
    "algorithm": "--algorithm",
    "health.path": "--health-path",
    "discovery": "--discovery",
    "discovery.uris": "--discovery",
}


#: Flags that may come from the file too: named only when the flag was given.
_FILE_OR_FLAG = {
    "hash_on": "--hash-on",
    "sticky.name": "--sticky-cookie",
    "admin_token_file": "--admin-token-file",
}
_STICKY_FIELDS = ("secret", "max_age", "secure", "path")


def _flag_name(field: str) -> str:
    return _FLAGS.get(field) or _FILE_OR_FLAG[field]


def summary(settings: Any) -> str:
    """One line saying what the settings run: ``--check-config``'s answer."""
    host, port = settings.listen
    parts = [
        f"{len(settings.upstreams)} upstreams",
        f"{len(settings.standbys)} standbys",
        f"algorithm {settings.algorithm}",
        f"listen {_address(host, port)}",
    ]
    if settings.admin is not None:
        parts.append(f"admin {_address(*settings.admin)}")
    if settings.health is not None:
        parts.append(f"health checks on {settings.health.path}")
    uris = settings.discovery.get("uris", [])
    if uris:
        parts.append(f"{len(uris)} discovery sources")
    return one_line("config OK: " + ", ".join(parts))


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _run_proxy(args: argparse.Namespace) -> int:
    from ._proxy._serve import run

    try:
        settings = proxy_settings(args)
    except ConfigError as exc:
        print(f"{PROG} proxy: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    if args.print_config or args.check_config:
        from ._proxy._config_dump import dump

        if args.print_config:
            sys.stdout.write(dump(settings))
        if args.check_config:
            print(summary(settings))
        return 0
    logging.basicConfig(
        level=settings.server["log_level"].upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        run(settings, reload=lambda: proxy_settings(args))
    except OSError as exc:
        reason = one_line(str(exc.strerror or exc))
        print(f"{PROG} proxy: error: cannot listen: {reason}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"{PROG} proxy: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clientlb`` command; returns the exit status."""
    args = parser().parse_args(argv)
    if args.command == "proxy":
        return _run_proxy(args)
    from . import _demo

    if args.plot is not None and not args.compare:
        print(f"{PROG} demo: error: --plot needs --compare", file=sys.stderr)
        return 2
    result: int = _demo.main(
        args.algorithm, args.duration, compare_all=args.compare, plot=args.plot
    )
    return result
