# -*- test-case-name: tests.test_tunnel_tls -*-
"""
The tunnel's TLS wrappers: a tunnel (accept mode with ``tls = true``, or
connect mode to a ``tls:`` head-end) starts only once the handshake has
verified the peer (`StartAfterHandshake`, `tls_protocol`): an unverified peer
never touches the line.  `TunnelTlsFactory` wraps a tunnel factory in TLS and
`TlsClientEndpoint` connects through it; the connection creators they take
are built in `cmegw.tls.contexts`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IHandshakeListener, IStreamClientEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

#: Seconds a peer has to complete the TLS handshake.
HANDSHAKE_TIMEOUT = 15.0


class TunnelTlsFactory(TLSMemoryBIOFactory):
    """
    `TLSMemoryBIOFactory` for a tunnel: its factory may refuse a client
    (buildProtocol returns None), and each write becomes a TLS record at once.
    Twisted's default transport holds small writes for one more reactor turn
    to batch them; the tunnel already writes whole reads of the line, so that
    turn would only add latency (measured: about 100 µs per echo).
    """

    noisy = False
    protocol = TLSMemoryBIOProtocol

    def buildProtocol(self, addr: Any) -> Any:
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)


@implementer(IStreamClientEndpoint)
class TlsClientEndpoint:
    """`wrapClientTLS` with `TunnelTlsFactory`: TLS to a head-end over a TCP endpoint."""

    def __init__(self, creator: Any, tcp: Any) -> None:
        self.creator = creator
        self.tcp = tcp

    def connect(self, factory: Any) -> Any:
        d = self.tcp.connect(TunnelTlsFactory(self.creator, True, factory))
        return d.addCallback(lambda protocol: protocol.wrappedProtocol)


@implementer(IHandshakeListener)
class StartAfterHandshake:
    """
    Mixed in front of a tunnel protocol: over TLS, the tunnel starts (the
    protocol's own ``connectionMade``) only when the handshake completed and
    verified the peer; a handshake that fails or does not finish within
    `HANDSHAKE_TIMEOUT` is reported to ``factory.tls_failed(protocol, reason)``
    and never reaches the line.
    """

    factory: Any
    transport: Any
    tls_started = False
    _handshake_timer: Any = None

    def connectionMade(self) -> None:
        self._handshake_timer = self.factory.clock.callLater(HANDSHAKE_TIMEOUT, self._handshake_late)

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        admit = getattr(self.factory, "admit_after_handshake", None)
        if admit is not None and not admit(self):
            self.transport.loseConnection()
            return
        self.tls_started = True
        super().connectionMade()  # type: ignore[misc]

    def close(self, reason: str) -> None:
        # Twisted's TLS closes only once no producer is registered; the line is this connection's producer.
        self.transport.unregisterProducer()
        super().close(reason)  # type: ignore[misc]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self.tls_started:
            super().connectionLost(reason)  # type: ignore[misc]
            return
        handler = getattr(self.factory, "tls_failed", None)
        if handler is not None:
            if timer is None and reason is not None and reason.check(error.ConnectionAborted):
                reason = Failure(error.TimeoutError(f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s"))
            handler(self, reason)


_TLS_CLASSES: dict[type, type] = {}


def tls_protocol(base: type) -> type:
    """The tunnel protocol `base` started only after a verified TLS handshake."""
    cls = _TLS_CLASSES.get(base)
    if cls is None:
        cls = _TLS_CLASSES[base] = type(f"Tls{base.__name__}", (StartAfterHandshake, base), {})
    return cls
