# -*- test-case-name: tests.test_tunnel_base,tests.test_tunnel_accept -*-
"""
What every tunnel is made of: the client protocol with its byte path
(`TunnelProtocol`: the fast writer, producers both ways, the idle
disconnect), TCP keep-alive, a peer's address in words, the one-client sink
of the line's bytes, and the statistics of clients turned away.

Accept mode, sharing mode, connect mode, RFC 2217 and the allow-list build
on this module; it imports none of them.
"""

from __future__ import annotations

import socket
from typing import Any

import attrs
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from cmegw.config.model import TunnelConfig
from cmegw.fastpath import fast_writer
from cmegw.stats import Counters, TunnelStatistics

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


@attrs.define(eq=False)
class Section:
    """
    A tunnel's section held on its own, for a connect mode that runs without
    an accept-mode `TunnelService` (which is otherwise what holds it).
    """

    config: TunnelConfig

    def apply(self, config: TunnelConfig) -> None:
        self.config = config


def retime(client: Any, config: TunnelConfig) -> None:
    """A changed configuration's keep-alive and disconnect timeout, applied to a connected client."""
    if hasattr(client.transport, "setTcpKeepAlive"):
        set_keepalive(client.transport, config.keepalive)
    client._schedule_idle()


class TunnelProtocol(Protocol):
    """One client of the tunnel; its bytes go to the line and the line's come back."""

    #: The tunnel's factory (`cmegw.tunnel.accept.TunnelFactory` or one like it).
    factory: Any
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


@attrs.define
class AccessStatistics(Counters):
    """Clients a tunnel turned away before they reached the line (read by the pages and the console)."""

    refused_by_allow_list: int = 0
    tls_refused: int = 0
    #: The latest refusal: who, when (clock seconds) and why, in words.
    last_refused: str = ""
    last_refused_at: float | None = None

    def refused(self, peer: str, why: str, now: float) -> None:
        self.last_refused = f"{peer}: {why}"
        self.last_refused_at = now

