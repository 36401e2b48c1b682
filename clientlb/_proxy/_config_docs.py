"""``docs/config.md``, written from the schema (``_schema``) and the classes'
defaults, so that the reference cannot drift from what the parser takes.
``scripts/gen_config_docs.py`` writes the file; a test compares it."""

from __future__ import annotations

from dataclasses import MISSING

from .._core import ALGORITHMS
from ._config_dump import address, toml_value
from ._schema import (
    CONNECTIONS,
    LIVE,
    NEW_POOL,
    RESTART,
    TABLES,
    TOP,
    UPSTREAM,
    Key,
    Table,
    reload_of,
)

_INTRO = """\
# The `clientlb proxy` configuration file

<!-- Generated from clientlb/_proxy/_schema.py and examples/proxy.toml by
scripts/gen_config_docs.py: edit those, then run the script. -->

`clientlb proxy --config proxy.toml` reads a TOML file; command-line flags
override it (`--upstream` replaces `upstreams`, `--algorithm` replaces
`algorithm`, and so on), and anything neither gives keeps its default.

* `clientlb proxy --config proxy.toml --check-config` checks the file and the
  flags, prints one line (`config OK: 3 upstreams, 0 standbys, algorithm
  least_connections, ...`) and exits 0; a bad value exits 2 with one line
  naming the key (`health.interval: must be > 0, got 0`).
* `--print-config` prints the effective configuration (file, flags and
  defaults) as TOML that parses back to the same settings; keys at their
  default are commented out.
* `kill -HUP <pid>` reloads the file: see [Reloading](#reloading-sighup).

Every value is checked before anything starts. Unknown keys are errors: a
misspelt setting silently ignored is worse than a refusal to start. A
*seconds* value is a number (integer or float) above 0 and at most a year.
TOML has no null: a key whose default is *unset* is left out to keep it unset.
The **reload** column says what SIGHUP does with a new value (see
[Reloading](#reloading-sighup)).
"""

_RELOAD = f"""\
## Reloading (SIGHUP)

`kill -HUP <pid>` makes `clientlb proxy` read its file again, apply the same
command-line flags over it, and switch to the result without dropping a
connection or a request in flight (as nginx's `-s reload`). Requests already
under way finish on the settings they started with; new requests use the new
ones. A file that does not parse or check keeps the old settings, and one
warning on the `clientlb` logger names the problem; the process keeps serving.
What each setting does on reload:

* **{LIVE}** - new requests use the new value. New and removed upstreams, and
  new weights, are applied to the running pool (`Pool.update()`): upstreams
  that stay keep their statistics and health, new ones are added under slow
  start, removed ones are drained (their requests in flight finish). With
  `[discovery]`, discovery owns the membership and the upstream lists of a
  reloaded file are ignored.
* **{NEW_POOL}** - a new pool is built with the new options (and the new
  upstream lists) and takes every new request; requests in flight finish on
  the old one. The new pool's statistics, ejections and health start afresh,
  its health checks and discovery start, and the old pool's stop. The
  upstream connections the engine keeps are reused.
* **{CONNECTIONS}** - client connections accepted after the reload use the new
  value; open ones keep the old.
* **{RESTART}** - the old value stays; the reload logs which keys need a
  restart (the listen addresses, the event loop, the TLS verification and
  upstream connection limits of the engine, which its open connections carry).

The `--log-level` flag, like every flag, still wins over the file after a
reload. Windows has no SIGHUP: there a change needs a restart.
"""


def default_text(table: Table, key: Key) -> str:
    """A key's default as the reference shows it."""
    value = table.default(key.name)
    if value is MISSING:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, range):
        return f"`{value.start}-{value.stop - 1}`"
    if table is TOP and key.name == "listen":
        value = address(value)
    try:
        return f"`{toml_value(value)}`"
    except TypeError:  # an object: its table lists its defaults
        return f"see [`[{table.name}.{key.name}]`](#{table.name}{key.name})"


def _rows(table: Table, keys: tuple[Key, ...]) -> list[str]:
    rows = ["| key | type | default | reload | meaning |", "|---|---|---|---|---|"]
    for key in keys:
        reload = reload_of(f"{table.name}.{key.name}")
        rows.append(
            f"| `{key.name}` | {key.type} | {default_text(table, key)} | {reload} | {key.meaning} |"
        )
    return rows


def markdown(example: str) -> str:
    """The whole reference, ending with ``example`` (a complete config file)."""
    table_keys = {t.name.partition(".")[0] for t in TABLES}
    plain = tuple(k for k in TOP.keys if k.name not in table_keys)
    out = [_INTRO, "## Top-level keys", "", TOP.meaning, "", *_rows(TOP, plain), ""]
    out += [
        "`algorithm` is one of: " + ", ".join(f"`{name}`" for name in ALGORITHMS) + ".",
        "",
        "### Upstream entries",
        "",
        f"{UPSTREAM.meaning} It builds a {UPSTREAM.builds}:",
        "",
        *_rows(UPSTREAM, UPSTREAM.keys),
        "",
        "```toml",
        'upstreams = ["http://10.0.0.1:8000", { url = "http://10.0.0.2:8000", weight = 2 }]',
        "```",
        "",
    ]
    for table in TABLES:
        out += [f"## `[{table.name}]`", "", f"{table.meaning} Becomes {table.builds}.", ""]
        out += [*_rows(table, table.keys), ""]
    out += [_RELOAD, "## A complete example", "", "```toml", example.rstrip("\n"), "```", ""]
    return "\n".join(out)
