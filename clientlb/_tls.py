"""How HTTPS and WSS upstreams are verified: the ``verify=`` setting of the
transports and the proxies.

It takes what httpx's ``verify`` takes (``True``, ``False`` or an
``ssl.SSLContext``) plus the path of a CA bundle (a PEM file or a directory of
hashed certificates), the form a config file can hold. ``True`` verifies against
the certifi bundle, as httpx does. A context is built once and shared by every
connection and every upstream's inner transport: building one loads the whole
bundle (30-50 ms), which ``httpx.HTTPTransport()`` would otherwise pay for each.
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import TypeAlias

from ._core import ConfigError

Verify: TypeAlias = bool | str | ssl.SSLContext


@functools.cache
def default_context() -> ssl.SSLContext:
    """The verifying context ``verify=True`` means (built on first use)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def tls_context(verify: object) -> ssl.SSLContext | None:
    """The context for ``verify``; ``None`` stands for ``default_context()``, so a
    proxy with plain-HTTP upstreams never pays for loading the bundle.

    Raises ``ConfigError`` naming ``verify`` for anything else, or a CA path
    that cannot be read.
    """
    if verify is True:
        return None
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
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
