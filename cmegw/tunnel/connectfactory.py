# -*- test-case-name: tests.test_tunnel_connect -*-
"""
A connect-mode connection: its protocol (an ordinary tunnel client that first
takes the line), the factory it talks to, which hands every decision to the
`cmegw.tunnel.connect.ConnectTunnelService`, and the endpoint a host is
dialled with.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from cmegw.config.model import ClientEndpoint
from cmegw.tunnel.base import OneClientSink, TunnelProtocol


class ConnectProtocol(TunnelProtocol):
    """The head-end's connection: a tunnel client that first takes the line (`ConnectFactory.admit`)."""

    factory: "ConnectFactory"
    started = False

    def connectionMade(self) -> None:
        if not self.factory.admit(self):
            self.transport.abortConnection()
            return
        self.started = True
        super().connectionMade()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.started:
            self.factory.not_started(self, reason)
            return
        if reason is not None and reason.check(SSL.Error) and not self.closing_reason:
            # TLS 1.3: the head-end checks our certificate after our side of the handshake is done.
            self.closing_reason = self.factory.tunnel._tls_ended(reason)
        super().connectionLost(reason)


class ConnectFactory(OneClientSink, Factory):
    """What a connect-mode connection's protocol talks to; the `ConnectTunnelService` decides."""

    protocol = ConnectProtocol
    noisy = False

    def __init__(self, tunnel: Any) -> None:
        """`tunnel`: the `cmegw.tunnel.connect.ConnectTunnelService` that decides."""
        self.tunnel = tunnel
        self.number = tunnel.number
        self.line = tunnel.line
        self.clock = tunnel.clock
        self.stats = tunnel.stats
        self.client: Any = None
        #: Sharing mode: the line's arbiter and the sharing counters (set by the tunnel when sharing is on).
        self.arbiter: Any = tunnel.arbiter
        self.sharing: Any = None

    @property
    def config(self) -> Any:
        """The tunnel's section, where the tunnel holds it (`TunnelProtocol` reads its timeouts here)."""
        return self.tunnel.config

    def admit(self, protocol: Any) -> bool:
        return self.tunnel._admit(protocol)

    def not_started(self, protocol: Any, reason: Failure | None) -> None:
        """A connection closed before it got the line (already counted)."""

    def tls_failed(self, protocol: Any, reason: Failure) -> None:
        self.tunnel._tls_failed(reason)

    def _client_connected(self, protocol: Any) -> None:
        self.tunnel._connected(protocol)

    def _client_gone(self, protocol: Any, why: str) -> None:
        self.tunnel._gone(protocol, why)


def default_endpoint(reactor: Any, host: ClientEndpoint, creator: Any) -> Any:
    """The endpoint a host is dialled with: names and IPv4/IPv6 literals, TLS wrapped around TCP."""
    tcp = HostnameEndpoint(reactor, host.host, host.port, timeout=host.timeout)
    if creator is None:
        return tcp
    from cmegw.tls.protocol import TlsClientEndpoint

    return TlsClientEndpoint(creator, tcp)
