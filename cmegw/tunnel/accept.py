# -*- test-case-name: tests.test_tunnel -*-
"""
The transparent TCP tunnel in accept mode: one client at a time, bytes both
ways unchanged, TCP keep-alive, idle disconnect, flow control, statistics.

Options per tunnel, each off by default (and then the listening factory and
the protocol are exactly the plain ones): an allow-list in front of the
factory (`cmegw.tunnel.allowlist`), TLS around it (`cmegw.tunnel.tlsconfig`),
RFC 2217 as the protocol (`cmegw.tunnel.rfc2217`), and, with connect mode on,
the line shared with the connect-mode peer (`ownership`, one peer at a time).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.config.model import TunnelConfig
from cmegw.fastpath import fast_writer
from cmegw.tunnel.eventlog import ConnectionEvents
from cmegw.serial.line import SerialLine
from cmegw.stats import (
    TUNNEL_CONNECTED,
    TUNNEL_DISABLED,
    TUNNEL_LISTEN_FAILED,
    TUNNEL_WAITING,
    TunnelStatistics,
)
from cmegw.tunnel.allowlist import AccessStatistics

log = Logger(namespace="cmegw.tunnel")

#: Seconds between attempts to listen again when the port could not be opened.
LISTEN_RETRY = 5.0
KEEPALIVE_PROBES = 3


def describe(address: IAddress) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def keepalive_options(idle_total: int) -> tuple[int, int, int]:
    """
    TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT that drop a dead peer in about
    `idle_total` seconds of silence (the device's keep-alive time).
    """
    interval = max(1, idle_total // 9)
    idle = max(1, idle_total - KEEPALIVE_PROBES * interval)
    return idle, interval, KEEPALIVE_PROBES


def set_keepalive(transport: Any, seconds: int) -> None:
    """Turn on TCP keep-alive with the tunnel's time (0 = off) on a TCP transport."""
    if seconds <= 0:
        transport.setTcpKeepAlive(0)
        return
    transport.setTcpKeepAlive(1)
    sock = getattr(transport, "socket", None)
    if sock is None:
        return
    idle, interval, count = keepalive_options(seconds)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, seconds * 1000)


class TunnelProtocol(Protocol):
    """One client of the tunnel; its bytes go to the line and the line's come back."""

    factory: "TunnelFactory"
    last_activity = 0.0
    closing_reason = ""

    def connectionMade(self) -> None:
        factory = self.factory
        self.peer = describe(self.transport.getPeer())
        self.last_activity = factory.clock.seconds()
        transport = self.transport
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
            set_keepalive(transport, factory.config.keepalive)
        self._start_flow()
        factory._client_connected(self)
        self._idle = None
        self._schedule_idle()

    def _start_flow(self) -> None:
        """The byte path: writes at once, and flow control both ways with the line."""
        transport, line = self.transport, self.factory.line
        self.write = fast_writer(transport)
        transport.registerProducer(line, True)
        line.registerProducer(transport, True)

    def dataReceived(self, data: bytes) -> None:
        factory = self.factory
        factory.stats.octets_from_network += len(data)
        self.last_activity = factory.clock.seconds()
        factory.line.write(data)

    def line_data(self, data: bytes) -> None:
        factory = self.factory
        factory.stats.octets_from_serial += len(data)
        self.last_activity = factory.clock.seconds()
        self.write(data)

    def close(self, reason: str) -> None:
        self.closing_reason = reason
        self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        self.closing_reason = reason
        self.transport.abortConnection()

    def _schedule_idle(self) -> None:
        timeout = self.factory.config.disconnect_timeout
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if timeout > 0:
            due = self.last_activity + timeout - self.factory.clock.seconds()
            self._idle = self.factory.clock.callLater(max(0.0, due), self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        timeout = self.factory.config.disconnect_timeout
        if timeout <= 0:
            return
        if self.factory.clock.seconds() - self.last_activity >= timeout:
            self.close(f"no data for {timeout} s (disconnect timeout)")
        else:
            self._schedule_idle()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        factory = self.factory
        if factory.client is self:
            factory.line.unregisterProducer()
            factory.line.resumeProducing()
        why = self.closing_reason or (reason.getErrorMessage() if reason is not None else "closed")
        factory._client_gone(self, why)


def protocol_class(config: TunnelConfig) -> type[TunnelProtocol]:
    """The accept-mode protocol: the device's transparent one unless RFC 2217 or TLS is on."""
    if not (config.rfc2217 or config.tls):
        return TunnelProtocol
    base: type[TunnelProtocol] = TunnelProtocol
    if config.rfc2217:
        from cmegw.tunnel.rfc2217 import Rfc2217Protocol

        base = Rfc2217Protocol
    if config.tls:
        from cmegw.tls.protocol import tls_protocol

        base = tls_protocol(base)
    return base


class OneClientSink:
    """The line's bytes go to the factory's one client; while there is none they are counted as discarded."""

    client: Any
    stats: TunnelStatistics

    def line_data(self, data: bytes) -> None:
        client = self.client
        if client is None:
            self.stats.octets_discarded += len(data)
        else:
            client.line_data(data)


class TunnelFactory(OneClientSink, ServerFactory):
    """Accepts one client at a time for one line; a second is refused (or replaces the first)."""

    protocol = TunnelProtocol
    noisy = False
    #: With connect mode on: the `cmegw.tunnel.connect.LineOwnership` shared with the connect-mode peer.
    ownership: Any = None
    #: Set by the tunnel service with TLS on: ``tls_failed(protocol, reason)`` counts and explains a failed handshake.
    tls_failed: Any = None
    #: Set by the gateway: ``change_baud(baud) -> str | None`` (an error) for RFC 2217 clients.
    change_baud: Any = None

    def __init__(self, number: int, config: TunnelConfig, line: SerialLine, clock: Any,
                 stats: TunnelStatistics | None = None) -> None:
        self.number = number
        self.config = config
        self.line = line
        self.clock = clock
        self.stats = stats if stats is not None else TunnelStatistics()
        self.client: TunnelProtocol | None = None
        self.events = ConnectionEvents(number, clock)
        self.protocol = protocol_class(config)
        line.attach(self.line_data)

    def buildProtocol(self, addr: IAddress) -> TunnelProtocol | None:  # type: ignore[override]
        # Over TLS the client is not known yet: it replaces nobody before its handshake.
        if not self.admit(describe(addr), final=not self.config.tls):
            return None
        return super().buildProtocol(addr)  # type: ignore[return-value]

    def admit(self, peer: str, final: bool = True) -> bool:
        """Whether a new client may have the line (a refusal is counted and logged; a replaced client closed)."""
        ownership = self.ownership
        if ownership is not None and not ownership.free_for(self):
            self.stats.dropped_accepts += 1
            self.events.info("Tunnel {n}: refused {peer}: the line is in use by {holder}", peer=peer,
                             holder=ownership.holder_name)
            return False
        if self.client is not None:
            if self.config.on_busy == "replace":
                if final:
                    self.events.info("Tunnel {n}: {peer} replaces {old}", peer=peer, old=self.client.peer)
                    self.client.abort(f"replaced by {peer}")
            else:
                self.stats.dropped_accepts += 1
                self.events.info("Tunnel {n}: refused {peer}: the line is in use by {old}", peer=peer,
                                 old=self.client.peer)
                return False
        return True

    @property
    def clients(self) -> list[TunnelProtocol]:
        """The connected clients (one at most; a sharing tunnel's factory has several)."""
        return [self.client] if self.client is not None else []

    def admit_after_handshake(self, protocol: TunnelProtocol) -> bool:
        """A TLS client whose handshake succeeded: the line may have been taken meanwhile."""
        return self.admit(describe(protocol.transport.getPeer()))

    def apply(self, config: TunnelConfig) -> None:
        """Keep-alive and disconnect timeout apply at once, to the current client too."""
        self.config = config
        self.protocol = protocol_class(config)
        client = self.client
        if client is not None:
            if hasattr(client.transport, "setTcpKeepAlive"):
                set_keepalive(client.transport, config.keepalive)
            client._schedule_idle()

    def disconnect(self, reason: str) -> None:
        if self.client is not None:
            self.client.close(reason)

    def _client_connected(self, client: TunnelProtocol) -> None:
        old = self.client
        if old is not None and old is not client:
            self._client_gone(old, old.closing_reason or "replaced")
        self.client = client
        if self.ownership is not None:
            self.ownership.claim(self, self.line_data, f"accept-mode client {client.peer}")
        s = self.stats
        s.completed_accepts += 1
        s.state = TUNNEL_CONNECTED
        s.peer = client.peer
        s.connected_at = self.clock.seconds()
        self.events.info("Tunnel {n}: {peer} connected", peer=client.peer)

    def _client_gone(self, client: TunnelProtocol, why: str) -> None:
        if client is not self.client:
            return
        self.client = None
        if self.ownership is not None:
            self.ownership.release(self)
        s = self.stats
        s.disconnects += 1
        if s.connected_at is not None:
            s.accept_time_closed += self.clock.seconds() - s.connected_at
        s.connected_at = None
        s.peer = ""
        if s.state == TUNNEL_CONNECTED:
            s.state = TUNNEL_WAITING
        self.events.info("Tunnel {n}: {peer} disconnected: {why}", peer=client.peer, why=why)


class TunnelService(service.Service):
    """Listens for the tunnel's clients on its endpoint; applies changes live."""

    def __init__(self, number: int, config: TunnelConfig, line: SerialLine, reactor: Any,
                 stats: TunnelStatistics | None = None, listen: str | None = None) -> None:
        self.number = number
        self.config = config
        self.reactor = reactor
        self.stats = stats if stats is not None else TunnelStatistics()
        #: Endpoint used instead of the configured one (command line).
        self.listen_override = listen
        self.factory = TunnelFactory(number, config, line, reactor, self.stats)
        self.port: IListeningPort | None = None
        self._retry: Any = None
        self._listening: defer.Deferred | None = None
        self._waiting: list[defer.Deferred] = []
        #: Clients turned away by the allow-list or TLS.
        self.access = AccessStatistics()
        #: Set by the gateway: ``https_files() -> (certificate, key)``, the HTTPS store's files (TLS accept mode).
        self.https_files: Any = None
        self._server_tls: Any = None
        self._allowed: Any = None

    @property
    def endpoint(self) -> str:
        return self.listen_override or self.config.listen

    def startService(self) -> None:
        super().startService()
        self._listen()

    def when_listening(self) -> defer.Deferred:
        """
        Fires once the tunnel listens (at once if it does, or is disabled); a
        tunnel that cannot listen yet keeps it waiting while it retries.
        """
        if self.port is not None or not self.config.enabled:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred(lambda d: self._waiting.remove(d) if d in self._waiting else None)
        self._waiting.append(d)
        return d

    def _listening_now(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        d = self._stop_listening("the gateway is stopping")
        self.factory.events.flush()
        return d

    def apply(self, config: TunnelConfig, listen: str | None = None) -> defer.Deferred:
        old_endpoint, old_enabled = self.endpoint, self.config.enabled
        old_guard = self._guard_settings(self.config)
        self.config = config
        if listen is not None:
            self.listen_override = listen
        self.factory.apply(config)
        if config.allow_list:
            self._close_outsiders()
        if not self.running:
            return defer.succeed(None)
        if (self.endpoint, config.enabled) != (old_endpoint, old_enabled) or \
                old_guard[:2] != self._guard_settings(config)[:2]:
            d = self._stop_listening("the tunnel was reconfigured")
        elif old_guard != self._guard_settings(config):
            d = self._stop_listening("", disconnect=False)  # allow-list on or off: the client may stay
        else:
            return defer.succeed(None)
        d.addCallback(lambda _: self._listen() if self.running else None)
        return d

    @staticmethod
    def _guard_settings(config: TunnelConfig) -> tuple[Any, ...]:
        """What the listening factory is made of (a change means listening again)."""
        return config.tls, config.tls_client_ca, bool(config.allow_list)

    def _listening_factory(self) -> Any:
        """The tunnel's factory, inside TLS and behind the allow-list when those are on (else itself)."""
        config = self.config
        factory: Any = self.factory
        if config.tls:
            from cmegw.tls.contexts import ServerTls, TlsSetupError
            from cmegw.tls.protocol import TunnelTlsFactory

            if self.https_files is None:
                raise TlsSetupError("TLS needs the HTTPS certificate store, which this tunnel was not given")
            self._server_tls = ServerTls(self.https_files, config.tls_client_ca)
            self._server_tls.options()  # a certificate that cannot serve is reported now, not at the first client
            self.factory.tls_failed = self._tls_failed
            factory = TunnelTlsFactory(self._server_tls, False, factory)
        if config.allow_list:
            from cmegw.tunnel.allowlist import GuardedFactory

            factory = GuardedFactory(factory, self._allow_list, self.number, self.stats, self.access, self.reactor,
                                     getattr(self.factory, "events", None))
        return factory

    def _allow_list(self) -> Any:
        from cmegw.tunnel.allowlist import AllowList

        entries = self.config.allow_list
        if self._allowed is None or self._allowed[0] != entries:
            self._allowed = (entries, AllowList.from_setting(entries))
        return self._allowed[1]

    def _close_outsiders(self) -> None:
        """A changed allow-list applies to the connected clients too."""
        allowed = self._allow_list()
        for client in list(self.factory.clients):
            host = getattr(client.transport.getPeer(), "host", "")
            if not allowed.permits(host if isinstance(host, str) else ""):
                self.access.refused(client.peer, "no longer in the allow-list", self.reactor.seconds())
                log.info("Tunnel {n}: closing {peer}: no longer in the allow-list", n=self.number, peer=client.peer)
                client.close("no longer in the allow-list")

    def _tls_failed(self, protocol: Any, reason: Failure) -> None:
        """A client's TLS handshake failed: counted as a dropped accept, the reason logged and kept."""
        transport = protocol.transport
        peer = describe(transport.getPeer())
        handle = getattr(transport, "getHandle", None)
        why = self._server_tls.explain(reason, handle() if handle else None, transport) if self._server_tls \
            else reason.getErrorMessage()
        self.stats.dropped_accepts += 1
        self.access.tls_refused += 1
        self.access.refused(peer, why, self.reactor.seconds())
        self.factory.events.info("Tunnel {n}: refused {peer}: {why}", peer=peer, why=why)

    def _listen(self) -> None:
        self._retry = None
        if not self.config.enabled:
            self.stats.state = TUNNEL_DISABLED
            self.stats.listening = ""
            self._listening_now()
            return
        try:
            endpoint = serverFromString(self.reactor, self.endpoint)
            factory = self._listening_factory()
        except Exception as e:  # validated already; a plugin may still refuse, a TLS file be unusable
            self._listen_failed(Failure(e))
            return
        d = self._listening = endpoint.listen(factory)
        d.addCallbacks(self._listened, self._listen_failed)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self._listening = None
        self.port = port
        self.stats.listening = describe(port.getHost())
        self.stats.error = ""
        if self.stats.state != TUNNEL_CONNECTED:
            self.stats.state = TUNNEL_WAITING
        log.info("Tunnel {n}: listening on {where} for line {n}", n=self.number, where=self.stats.listening)
        self._listening_now()
        return port

    def _listen_failed(self, failure: Failure) -> None:
        self._listening = None
        self.stats.state = TUNNEL_LISTEN_FAILED
        self.stats.error = f"cannot listen on {self.endpoint}: {failure.getErrorMessage()}"
        log.error("Tunnel {n}: {error}; retrying in {s} s", n=self.number, error=self.stats.error,
                  s=LISTEN_RETRY)
        if self.running:
            self._retry = self.reactor.callLater(LISTEN_RETRY, self._listen)

    def _stop_listening(self, reason: str, disconnect: bool = True) -> defer.Deferred:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None
        if disconnect:
            self.factory.disconnect(reason)
        port, self.port = self.port, None
        self.stats.listening = ""
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)
