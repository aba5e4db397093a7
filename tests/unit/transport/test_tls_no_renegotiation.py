"""Every TLS context Plastron builds refuses TLS 1.2 renegotiation (HTTP/2 forbids it, and a
renegotiation's handshake records would bypass the connection's unsent-output cap), whatever
OpenSSL's own default is."""

from __future__ import annotations

import ssl

from transport_pki import PkiCa

from plastron.transport.tls import (
    client_ssl_context,
    https_server_context,
    https_spiffe_client_context,
    server_ssl_context,
)


def test_every_context_refuses_renegotiation(ca: PkiCa) -> None:
    svid = ca.svid("/spire/server")
    contexts = {
        "server": server_ssl_context(svid.chain, svid.key, lambda: [ca.cert]),
        "client": client_ssl_context(trust_bundle=[ca.cert]),
        "https server": https_server_context(svid.chain, svid.key),
        "https spiffe client": https_spiffe_client_context([ca.cert]),
    }
    refusing = {name: bool(ctx.options & ssl.OP_NO_RENEGOTIATION) for name, ctx in contexts.items()}
    assert refusing == dict.fromkeys(contexts, True)
    for ctx in contexts.values():
        assert ctx.options & ssl.OP_NO_TICKET and ctx.options & ssl.OP_NO_COMPRESSION
