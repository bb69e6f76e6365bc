# -*- test-case-name: tests.test_tunnel_accept -*-
"""
The transparent TCP tunnel in accept mode: one client at a time, bytes both
ways unchanged, TCP keep-alive, idle disconnect, flow control, statistics.

Options per tunnel, each off by default (and then the listening factory and
the protocol are exactly the plain ones): an allow-list in front of the
factory (`cmegw.tunnel.allowlist`), TLS around it (`cmegw.tls.protocol`),
RFC 2217 as the protocol (`cmegw.tunnel.rfc2217`), and the line shared with
the tunnel's connect mode (`ownership`, given at construction: one peer at a
time).  The factory holds the tunnel's section, the one running copy.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.config.model import TunnelConfig
from cmegw.serial.line import SerialLine
from cmegw.stats import (
    TUNNEL_CONNECTED,
    TUNNEL_DISABLED,
    TUNNEL_LISTEN_FAILED,
    TUNNEL_WAITING,
    TunnelStatistics,
)
from cmegw.tunnel.base import AccessStatistics, OneClientSink, TunnelProtocol, describe, retime
from cmegw.tunnel.eventlog import ConnectionEvents
from cmegw.tunnel.ownership import LineOwnership

log = Logger(namespace="cmegw.tunnel")

#: Seconds between attempts to listen again when the port could not be opened.
LISTEN_RETRY = 5.0

#: ``change_baud(baud)``: sets the line's rate for an RFC 2217 client; the error text of a refusal, or None.
ChangeBaud = Callable[[int], "str | None"]
#: ``https_files()``: the (certificate, key) paths of the HTTPS store, which a TLS tunnel serves.
HttpsFiles = Callable[[], "tuple[Any, Any]"]


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


class TunnelFactory(OneClientSink, ServerFactory):
    """Accepts one client at a time for one line; a second is refused (or replaces the first)."""

    protocol = TunnelProtocol
    noisy = False

    def __init__(self, number: int, config: TunnelConfig, line: SerialLine, clock: Any,
                 stats: TunnelStatistics | None = None, *, change_baud: ChangeBaud | None = None,
                 tls_failed: Callable[[Any, Failure], None] | None = None,
                 ownership: LineOwnership | None = None) -> None:
        """
        `config` is the tunnel's section: this factory holds the one running
        copy (its `TunnelService` reads it here).  `change_baud(baud)` is the
        gateway's action that sets the line's baud rate for an RFC 2217
        client and returns the error text of a refusal (or None);
        `tls_failed(protocol, reason)` counts and explains a failed TLS
        handshake; `ownership` is the `LineOwnership` shared with the
        tunnel's connect mode (without one, the factory has the line alone).
        """
        self.change_baud = change_baud
        self.tls_failed = tls_failed
        self.number = number
        self.config = config
        self.line = line
        self.clock = clock
        self.stats = stats if stats is not None else TunnelStatistics()
        self.client: TunnelProtocol | None = None
        self.events = ConnectionEvents(number, clock)
        self.protocol = protocol_class(config)
        self.ownership = ownership if ownership is not None else LineOwnership(line)
        self.ownership.share(self.line_data)

    def buildProtocol(self, addr: IAddress) -> TunnelProtocol | None:  # type: ignore[override]
        # Over TLS the client is not known yet: it replaces nobody before its handshake.
        if not self.admit(describe(addr), final=not self.config.tls):
            return None
        return super().buildProtocol(addr)  # type: ignore[return-value]

    def admit(self, peer: str, final: bool = True) -> bool:
        """Whether a new client may have the line (a refusal is counted and logged; a replaced client closed)."""
        ownership = self.ownership
        if not ownership.free_for(self):
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
        """The tunnel's new section: keep-alive and disconnect timeout apply at once, to the current client too."""
        self.config = config
        self.protocol = protocol_class(config)
        if self.client is not None:
            retime(self.client, config)

    def disconnect(self, reason: str) -> None:
        if self.client is not None:
            self.client.close(reason)

    def _client_connected(self, client: TunnelProtocol) -> None:
        old = self.client
        if old is not None and old is not client:
            self._client_gone(old, old.closing_reason or "replaced")
        self.client = client
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
                 stats: TunnelStatistics | None = None, listen: str | None = None, *,
                 change_baud: ChangeBaud | None = None, https_files: HttpsFiles | None = None,
                 ownership: LineOwnership | None = None) -> None:
        """
        `change_baud` and `ownership` go to the factory (RFC 2217 and connect
        mode, see `TunnelFactory`); `https_files() -> (certificate, key)`
        names the HTTPS store's files, which the tunnel serves with TLS on.
        """
        self.number = number
        self.reactor = reactor
        self.stats = stats if stats is not None else TunnelStatistics()
        #: Endpoint used instead of the configured one (command line).
        self.listen_override = listen
        self.factory = self._build_factory(config, line, change_baud, ownership)
        self.port: IListeningPort | None = None
        self._retry: Any = None
        self._listening: defer.Deferred | None = None
        self._waiting: list[defer.Deferred] = []
        #: Clients turned away by the allow-list or TLS.
        self.access = AccessStatistics()
        self.https_files = https_files
        self._server_tls: Any = None
        self._allowed: Any = None

    def _build_factory(self, config: TunnelConfig, line: Any, change_baud: ChangeBaud | None,
                       ownership: LineOwnership | None) -> Any:
        return TunnelFactory(self.number, config, line, self.reactor, self.stats, change_baud=change_baud,
                             tls_failed=self._tls_failed, ownership=ownership)

    @property
    def config(self) -> TunnelConfig:
        """The tunnel's section in force: the one copy, which its factory holds."""
        return self.factory.config  # type: ignore[no-any-return]

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
