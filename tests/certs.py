"""A throwaway certificate authority for the TLS tests (trustme), written to files
as uvicorn and the ``verify=`` settings read them."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class Certs:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(directory / "ca.pem")
        self.cert_file = str(directory / "server.pem")
        self.key_file = str(directory / "server.key")
        ca.cert_pem.write_to_path(self.ca_file)
        server.cert_chain_pems[0].write_to_path(self.cert_file)
        for pem in server.cert_chain_pems[1:]:
            pem.write_to_path(self.cert_file, append=True)
        server.private_key_pem.write_to_path(self.key_file)

    @property
    def tls(self) -> tuple[str, str]:
        return self.cert_file, self.key_file

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)
