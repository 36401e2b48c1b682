"""How HTTPS and WSS upstreams are verified: the ``verify=`` setting of the
transports and the proxies.

It takes what httpx's ``verify`` takes (``True``, ``False`` or an
``ssl.SSLContext``) and means the same: ``True`` is httpx's own default context
(the ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` the environment names, else the
certifi bundle), read once per process. It also takes the path of a CA bundle (a
PEM file or a directory of hashed certificates, relative to the working
directory), the form a config file can hold. Every connection and every
upstream's inner transport shares one context: building one loads the whole
bundle (30-50 ms), which ``httpx.HTTPTransport()`` would otherwise pay for each.

The transports of ``clientlb.httpx2`` give ``module=httpx2``: there ``True`` and
``False`` mean what they mean to httpx2 (whose default trusts the system's store).
"""

from __future__ import annotations

import functools
import os
import ssl
from types import ModuleType
from typing import TypeAlias

from ._core import ConfigError
from ._httpx import httpx

Verify: TypeAlias = bool | str | ssl.SSLContext


@functools.cache
def default_context(module: ModuleType = httpx) -> ssl.SSLContext:
    """The verifying context ``verify=True`` means to ``module``, built on first use."""
    context: ssl.SSLContext = module.create_ssl_context(verify=True)
    return context


def tls_context(verify: object, module: ModuleType = httpx) -> ssl.SSLContext | None:
    """The context for ``verify`` (as ``module`` reads it); ``None`` stands for
    ``default_context(module)``, which is built only when something needs it.

    Raises ``ConfigError`` naming ``verify`` for anything else, or a CA path
    that cannot be read.
    """
    if verify is True:
        return None
    if verify is False:
        unverified: ssl.SSLContext = module.create_ssl_context(verify=False)
        return unverified
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str) and verify:
        try:
            if os.path.isdir(verify):
                return ssl.create_default_context(capath=verify)
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            reason = f"cannot load CA certificates from {verify}: {exc}"
            raise ConfigError("verify", reason) from None
    raise ConfigError(
        "verify", f"expected true, false, a CA bundle path or an ssl.SSLContext, got {verify!r}"
    )
