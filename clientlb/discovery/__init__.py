"""Discovery providers: where a pool's upstreams come from at run time.

Each provider reads a registry and feeds a ``Pool`` through ``pool.update()``;
the transports and proxies run it (``discovery=``) in a thread or an anyio task.
A registry that fails or answers garbage never empties the pool: the last good
set is kept, the failure logged once (logger ``clientlb.discovery``), and the
registry retried with bounded backoff.

* ``DNS`` - A/AAAA or SRV records, re-resolved on their TTL (needs dnspython).
* ``Etcd`` - keys under a prefix, read and then watched through etcd's v3 JSON API.
* ``File`` - a TOML or JSON file, re-read when it changes.
* ``Provider`` - the base class, for a registry of your own.
* ``from_uri()`` - a provider from ``dns://``, ``etcd://`` or ``file://`` URIs.
"""

from ._base import Endpoints as Endpoints
from ._base import Feed as Feed
from ._base import InvalidAnswer as InvalidAnswer
from ._base import Provider as Provider
from ._dns import DNS as DNS
from ._etcd import Etcd as Etcd
from ._file import File as File
from ._uri import from_uri as from_uri

__all__ = ["DNS", "Endpoints", "Etcd", "Feed", "File", "InvalidAnswer", "Provider", "from_uri"]
