# -*- test-case-name: tests.test_tunnel_sharing -*-
"""
Tunnel sharing mode: several head-end clients on one tunnel, one M-Bus.

A transparent tunnel passes bytes unparsed, so it can serve one client only:
two head-ends talking at once would garble each other's replies.  In sharing
mode (``sharing = true`` on the tunnel, off by default) the tunnel reads the
EN 13757-2 link layer instead: each client's bytes are cut into telegrams by
their announced lengths (`frames.split_telegrams`) and checked
(`frames.parse_frame`: start, lengths, checksum, stop).  A well-formed
request (single character, short, control or long frame) goes to the line's
`BusArbiter` as one transaction; the reply heard on the bus (the clean
telegram, or the garbage of a collision, byte for byte) goes back to that
client only.  Meanwhile the other clients' requests wait in the arbiter's
bounded FIFO, one per client at a time, so they take turns with each other
and with the gateway's own master.  A client that sends more before its
answer came has them queued (up to `CLIENT_QUEUE_LIMIT`; more are dropped and
counted).

Malformed bytes get no bus time: garbage before a telegram, a telegram with
a bad checksum or stop byte, a partial telegram not completed within
`PARTIAL_FRAME_TIMEOUT`.  They are counted in `SharingStatistics`.

`SharingTunnelService` is the accept-mode `TunnelService` (listening, retry,
live changes, keep-alive and idle disconnect, the allow-list, TLS) with this
factory.  Over TLS a client shares the bus only once its handshake verified
it (`tlsconfig.StartAfterHandshake`); a failed handshake is counted and
explained by the service as in accept mode.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.config.model import TunnelConfig
from cmegw.mbus import frames
from cmegw.mbus.arbiter import BusArbiter, Reply
from cmegw.mbus.frames import FrameError
from cmegw.stats import TUNNEL_CONNECTED, TUNNEL_WAITING, Counters, TunnelStatistics
from cmegw.tunnel.accept import ChangeBaud, HttpsFiles, TunnelService
from cmegw.tunnel.base import TunnelProtocol, describe, retime
from cmegw.tunnel.eventlog import ConnectionEvents
from cmegw.tunnel.ownership import LineOwnership

log = Logger(namespace="cmegw.tunnel")

#: Clients one sharing tunnel serves at once (mbusd: 32; the arbiter queues 32 transactions).
MAX_CLIENTS = 16
#: Requests of one client that may wait behind its running one.
CLIENT_QUEUE_LIMIT = 8
#: Seconds a partial telegram from a client may wait for its remaining bytes.
PARTIAL_FRAME_TIMEOUT = 1.0


@attrs.define
class SharingStatistics(Counters):
    """What sharing mode adds to a tunnel's statistics."""

    clients: int = 0
    requests: int = 0
    replies: int = 0
    silent: int = 0
    malformed_frames: int = 0
    malformed_bytes: int = 0
    dropped_requests: int = 0



def expects_reply(frame: frames.Frame) -> bool:
    """Whether a slave answers `frame`: not an acknowledge, not a broadcast to 255."""
    return frame.kind != "ack" and frame.a != frames.BROADCAST_NOREPLY


class SharingProtocol(TunnelProtocol):
    """One client of a sharing tunnel: its telegrams go to the arbiter, their replies come back."""

    factory: "SharingFactory"

    def _start_flow(self) -> None:
        """Not a byte stream: telegrams queued for the arbiter, one transaction at a time."""
        self._buffer = b""
        self._partial: IDelayedCall | None = None
        self._waiting: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._pending: defer.Deferred | None = None
        self._gone = False

    def dataReceived(self, data: bytes) -> None:
        factory = self.factory
        factory.stats.octets_from_network += len(data)
        self.last_activity = factory.clock.seconds()
        sharing = factory.sharing
        telegrams, self._buffer, skipped = frames.split_telegrams(self._buffer + data)
        if skipped:
            sharing.malformed_frames += 1
            sharing.malformed_bytes += skipped
        for telegram in telegrams:
            try:
                frame = frames.parse_frame(telegram)
            except FrameError as e:
                sharing.malformed_frames += 1
                sharing.malformed_bytes += len(telegram)
                log.debug("Tunnel {n}: {peer} sent a malformed frame: {e}", n=factory.number, peer=self.peer, e=e)
                continue
            self._submit(telegram, expects_reply(frame))
        self._watch_partial()

    def _watch_partial(self) -> None:
        if self._partial is not None and self._partial.active():
            self._partial.cancel()
        self._partial = None
        if self._buffer:
            self._partial = self.factory.clock.callLater(PARTIAL_FRAME_TIMEOUT, self._drop_partial)

    def _drop_partial(self) -> None:
        self._partial = None
        sharing = self.factory.sharing
        sharing.malformed_frames += 1
        sharing.malformed_bytes += len(self._buffer)
        self._buffer = b""

    def _submit(self, telegram: bytes, expect_reply: bool) -> None:
        if len(self._waiting) >= CLIENT_QUEUE_LIMIT:
            self.factory.sharing.dropped_requests += 1
            return
        self._waiting.append((telegram, expect_reply))
        self._next()

    def _next(self) -> None:
        if self._pending is not None or not self._waiting or self._gone:
            return
        telegram, expect_reply = self._waiting.popleft()
        self.factory.sharing.requests += 1
        d = self._pending = self.factory.arbiter.transact(telegram, expect_reply=expect_reply)
        d.addCallbacks(self._replied, self._failed)

    def _replied(self, reply: Reply) -> None:
        self._pending = None
        factory = self.factory
        if reply.data:
            factory.sharing.replies += 1
            factory.stats.octets_from_serial += len(reply.data)
            self.last_activity = factory.clock.seconds()
            if not self._gone:
                self.transport.write(reply.data)  # one reply per bus transaction: no fast path needed
        elif reply.silent:
            factory.sharing.silent += 1
        self._next()

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        if not failure.check(defer.CancelledError):
            self.factory.sharing.dropped_requests += 1
            log.debug("Tunnel {n}: {peer}'s request got no bus time: {why}", n=self.factory.number, peer=self.peer,
                      why=failure.getErrorMessage())
        self._next()

    def _check_idle(self) -> None:
        if self._pending is not None or self._waiting:
            self.last_activity = self.factory.clock.seconds()  # waiting for the bus is not idling
        super()._check_idle()

    def line_data(self, data: bytes) -> None:  # pragma: no cover - the arbiter answers clients directly
        raise NotImplementedError("a sharing client gets replies, not the line's bytes")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._gone = True
        self._waiting.clear()
        for call in (self._idle, self._partial):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._partial = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        why = self.closing_reason or (reason.getErrorMessage() if reason is not None else "closed")
        self.factory._client_gone(self, why)


def sharing_protocol_class(config: TunnelConfig) -> type[SharingProtocol]:
    """The sharing protocol, started only after a verified handshake when the tunnel accepts over TLS."""
    if not config.tls:
        return SharingProtocol
    from cmegw.tls.protocol import tls_protocol

    return tls_protocol(SharingProtocol)


class SharingFactory(ServerFactory):
    """Up to `MAX_CLIENTS` clients of one tunnel in sharing mode."""

    protocol = SharingProtocol
    noisy = False

    def __init__(self, number: int, config: TunnelConfig, arbiter: BusArbiter, clock: Any,
                 stats: TunnelStatistics | None = None, sharing: SharingStatistics | None = None, *,
                 tls_failed: Callable[[Any, Failure], None] | None = None,
                 ownership: LineOwnership | None = None) -> None:
        """
        `config` is the tunnel's section (this factory holds the one running
        copy); ``tls_failed(protocol, reason)`` counts and explains a failed
        TLS handshake (the tunnel service's); `ownership` is the tunnel's
        `LineOwnership`, through which the line's stray bytes come here
        (nobody holds the line in sharing mode).
        """
        self.tls_failed = tls_failed
        self.number = number
        self.config = config
        self.arbiter = arbiter
        self.clock = clock
        self.stats = stats if stats is not None else TunnelStatistics()
        self.sharing = sharing if sharing is not None else SharingStatistics()
        self.clients: list[SharingProtocol] = []
        self.events = ConnectionEvents(number, clock)
        self.protocol = sharing_protocol_class(config)
        self.ownership = ownership if ownership is not None else LineOwnership(arbiter.port)
        self.ownership.share(self.stray)

    def buildProtocol(self, addr: IAddress) -> SharingProtocol | None:  # type: ignore[override]
        if not self.admit(describe(addr)):
            return None
        return super().buildProtocol(addr)  # type: ignore[return-value]

    def admit(self, peer: str) -> bool:
        """Whether one more client may share the line (a refusal is counted and logged)."""
        if len(self.clients) >= MAX_CLIENTS:
            self.stats.dropped_accepts += 1
            self.events.info("Tunnel {n}: refused {peer}: {count} clients share the line already",
                             peer=peer, count=len(self.clients))
            return False
        return True

    def admit_after_handshake(self, protocol: SharingProtocol) -> bool:
        """A TLS client whose handshake succeeded: the others may have filled the tunnel meanwhile."""
        return self.admit(describe(protocol.transport.getPeer()))

    def stray(self, data: bytes) -> None:
        """Bytes from the line outside any transaction: nobody asked for them."""
        self.stats.octets_discarded += len(data)

    def apply(self, config: TunnelConfig) -> None:
        self.config = config
        self.protocol = sharing_protocol_class(config)
        for client in self.clients:
            retime(client, config)

    def disconnect(self, reason: str) -> None:
        for client in list(self.clients):
            client.close(reason)

    def _client_connected(self, client: SharingProtocol) -> None:
        self.clients.append(client)
        s = self.stats
        s.completed_accepts += 1
        s.state = TUNNEL_CONNECTED
        s.peer = ", ".join(c.peer for c in self.clients)
        if s.connected_at is None:
            s.connected_at = self.clock.seconds()
        self.sharing.clients = len(self.clients)
        self.events.info("Tunnel {n}: {peer} connected (sharing, {count} clients)", peer=client.peer,
                         count=len(self.clients))

    def _client_gone(self, client: SharingProtocol, why: str) -> None:
        if client not in self.clients:
            return
        self.clients.remove(client)
        s = self.stats
        s.disconnects += 1
        s.peer = ", ".join(c.peer for c in self.clients)
        self.sharing.clients = len(self.clients)
        if not self.clients:
            if s.connected_at is not None:
                s.accept_time_closed += self.clock.seconds() - s.connected_at
            s.connected_at = None
            if s.state == TUNNEL_CONNECTED:
                s.state = TUNNEL_WAITING
        self.events.info("Tunnel {n}: {peer} disconnected: {why}", peer=client.peer, why=why)


class SharingTunnelService(TunnelService):
    """A tunnel in sharing mode: `TunnelService` listening with a `SharingFactory` (no RFC 2217)."""

    def __init__(self, number: int, config: TunnelConfig, arbiter: BusArbiter, reactor: Any,
                 stats: TunnelStatistics | None = None, listen: str | None = None,
                 sharing: SharingStatistics | None = None, *, https_files: HttpsFiles | None = None,
                 ownership: LineOwnership | None = None) -> None:
        self.arbiter = arbiter
        self._sharing_stats = sharing
        super().__init__(number, config, arbiter.port, reactor, stats, listen,  # type: ignore[arg-type]
                         https_files=https_files, ownership=ownership)

    def _build_factory(self, config: TunnelConfig, line: Any, change_baud: ChangeBaud | None,
                       ownership: LineOwnership | None) -> Any:
        return SharingFactory(self.number, config, self.arbiter, self.reactor, self.stats, self._sharing_stats,
                              tls_failed=self._tls_failed, ownership=ownership)
