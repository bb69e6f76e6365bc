# -*- test-case-name: tests.test_tunnel_connect -*-
"""
Connect mode: the tunnel dials a head-end, as the device's Connect Mode does.

Per tunnel, beside accept mode: up to 12 hosts (``tcp:host=..:port=..`` or
``tls:host=..:port=..``, Twisted's client endpoint syntax), a start mode and a
host-list mode.

Start
    ``always``: connect at start and again whenever the connection is lost.
    ``on-data``: connect when the line has bytes for the network; those bytes
    are kept (up to `ON_DATA_LIMIT`, the rest counted as discarded) and sent
    once connected.

Host list
    ``sequential``: each round tries the hosts from the first, the first that
    answers wins.  ``round-robin``: each round starts after the host used
    last.  When no host of a round answers, the tunnel waits before the next
    round: ``connect_backoff_min`` seconds, doubled after each failed round
    up to ``connect_backoff_max``, with up to `JITTER` more (never past the
    longest) so that many gateways do not all come back at once.  A
    connection that held for `GOOD_CONNECTION` seconds starts the back-off
    from the first wait again; a lost connection waits before it redials.

The connected peer is an ordinary tunnel client (`TunnelProtocol`): the same
byte path (the fast writer, producers both ways), TCP keep-alive and the
disconnect timeout as in accept mode.  Over TLS it starts only after the
handshake verified the head-end (`cmegw.tls.protocol`); a refused
certificate is counted and its reason shown in the state.

One peer holds a line at a time (`LineOwnership`): while the connect-mode
peer holds it an accept-mode client is refused and counted, and while an
accept-mode client holds it the connect tunnel does not dial (a dropped
connect is counted) until the line is free.  With sharing mode on, the
connect-mode peer is one more sharing client: its telegrams take turns on
the bus with the accept clients' (and ``on-data`` then behaves as
``always``: in sharing mode the line speaks only when asked).

Statistics are the device's: completed and dropped connects, disconnects,
the connection time of each host 1..12 (in `TunnelStatistics`), and the
state (`ConnectStatistics.text`): disabled / connecting to X / connected to
X / waiting N s before retry.
"""

from __future__ import annotations

import random as _random
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.config.model import ClientEndpoint, ConfigError, TunnelConfig, client_endpoint
from cmegw.stats import (
    CONNECT_CONNECTED,
    CONNECT_CONNECTING,
    CONNECT_DISABLED,
    CONNECT_HELD,
    CONNECT_IDLE,
    CONNECT_NO_HOSTS,
    CONNECT_RETRY,
    ConnectStatistics,
    TunnelStatistics,
)
from cmegw.tunnel.base import describe, retime
from cmegw.tunnel.connectfactory import ConnectFactory, ConnectProtocol, default_endpoint
from cmegw.tunnel.dialing import JITTER, backoff_delay, connect_failure_text, host_order
from cmegw.tunnel.ownership import LineOwnership

__all__ = [
    "CONNECT_CONNECTED", "CONNECT_CONNECTING", "CONNECT_DISABLED", "CONNECT_HELD", "CONNECT_IDLE",
    "CONNECT_NO_HOSTS", "CONNECT_RETRY", "GOOD_CONNECTION", "JITTER", "ON_DATA_LIMIT", "TIME_TICK",
    "ConnectFactory", "ConnectProtocol", "ConnectStatistics", "ConnectTunnelService", "LineOwnership",
    "backoff_delay", "connect_failure_text", "default_endpoint", "host_order",
]

log = Logger(namespace="cmegw.tunnel")

#: Bytes from the line kept for the network while an on-data connection is being made.
ON_DATA_LIMIT = 4096
#: Seconds a connection must hold for the back-off to start from its first wait again.
GOOD_CONNECTION = 10.0
#: How often the connection time of the connected host is brought up to date (seconds).
TIME_TICK = 1.0

_CONNECTION_SETTINGS = ("connect_mode", "connect_hosts", "connect_host_list", "connect_tls_ca",
                        "connect_tls_certificate", "connect_tls_key", "sharing")


def _connection_settings(config: TunnelConfig) -> tuple[Any, ...]:
    """What a connect-mode connection is made of: a change means dialling again."""
    return tuple(getattr(config, name) for name in _CONNECTION_SETTINGS)


class ConnectTunnelService(service.Service):
    """
    Connect mode of tunnel `number` on `line` (the arbiter's transparent port).

    ``tunnel()`` returns the object that holds the tunnel's section (its
    accept-mode `TunnelService`, or a `cmegw.tunnel.base.Section`): connect
    mode reads its settings there and keeps no copy.  `ownership` is the
    `LineOwnership` the accept-mode factory was given too: one peer holds
    the line at a time.  `connect_stats` is the state it shows (the one the
    gateway published for the tunnel before connect mode was built).
    """

    def __init__(self, number: int, tunnel: Callable[[], Any], line: Any, reactor: Any,
                 stats: TunnelStatistics | None = None, *, arbiter: Any = None,
                 ownership: LineOwnership | None = None, random: Callable[[], float] | None = None,
                 endpoint: Callable[[Any, ClientEndpoint, Any], Any] = default_endpoint,
                 connect_stats: ConnectStatistics | None = None) -> None:
        self.number = number
        self.tunnel = tunnel
        self.line = line
        self.reactor = reactor
        self.clock = reactor
        self.stats = stats if stats is not None else TunnelStatistics()
        self.arbiter = arbiter
        self.random = random or _random.random
        self.make_endpoint = endpoint
        self.connect_stats = connect_stats if connect_stats is not None else ConnectStatistics()
        self.ownership = ownership if ownership is not None else LineOwnership(line)
        self.factory = ConnectFactory(self)
        #: The connection settings (`_CONNECTION_SETTINGS`) connect mode was last started with.
        self._dialling: tuple[Any, ...] | None = None
        self._pending = bytearray()
        self._round: list[int] = []
        self._next_host = 0
        self._dialing = False
        self._attempt: defer.Deferred | None = None
        self._attempt_host: tuple[int, ClientEndpoint] | None = None
        self._creator: Any = None
        self._retry: Any = None
        self._connected_at: float | None = None
        self._counted_until = 0.0
        self._ticker: task.LoopingCall | None = None
        self._reconfigured = False
        self._closed: list[defer.Deferred] = []

    # -- what others read -------------------------------------------------------

    @property
    def config(self) -> TunnelConfig:
        """The tunnel's section, read where the tunnel holds it."""
        return self.tunnel().config  # type: ignore[no-any-return]

    @property
    def connected(self) -> bool:
        return self.factory.client is not None

    @property
    def enabled(self) -> bool:
        return self.config.connect_mode != "disabled"

    def text(self) -> str:
        return self.connect_stats.text(self.clock.seconds())

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._configure()

    def stopService(self) -> Any:
        """Stop dialling and close the connection; the Deferred fires once it is closed."""
        super().stopService()
        client = self.factory.client
        closed: defer.Deferred = defer.Deferred()
        if client is None:
            closed.callback(None)
        else:
            self._closed.append(closed)
        self._halt("the gateway is stopping")
        self.ownership.set_idle(None)
        self.connect_stats.state = CONNECT_DISABLED
        return closed

    def apply(self, config: TunnelConfig) -> None:
        """
        The tunnel's section changed to `config` (the object the tunnel now
        holds): timeouts apply at once; new hosts or modes start connect mode
        again.
        """
        if self.factory.client is not None:
            retime(self.factory.client, config)
        if _connection_settings(config) != self._dialling:
            self._dialling = _connection_settings(config)
            self._halt("the connect mode settings changed")
            self.connect_stats.failed_rounds = 0
            if self.running and self.factory.client is None:
                self._configure()

    def _sharing(self) -> bool:
        return bool(self.config.sharing and self.arbiter is not None)

    # -- what to do now ---------------------------------------------------------------

    def _configure(self) -> None:
        s = self.connect_stats
        self._dialling = _connection_settings(self.config)
        self.ownership.set_idle(self._line_idle if self.enabled and self._on_data() else None)
        if not self.enabled:
            s.state = CONNECT_DISABLED
            return
        if not self.config.connect_hosts:
            s.state = CONNECT_NO_HOSTS
            log.warn("Tunnel {n}: connect mode is {mode} but no host is configured", n=self.number,
                     mode=self.config.connect_mode)
            return
        if self._on_data():
            if not self._pending:
                s.state = CONNECT_IDLE
                return
        self._dial_round()

    def _on_data(self) -> bool:
        return self.config.connect_mode == "on-data" and not self._sharing()

    def _wanted(self) -> bool:
        """Whether a connection should be made now."""
        if not self.running or not self.enabled or not self.config.connect_hosts:
            return False
        return not self._on_data() or bool(self._pending)

    def _line_idle(self, data: bytes) -> None:
        """On-data start: the line's bytes while nobody holds it, kept for the connection they start."""
        room = ON_DATA_LIMIT - len(self._pending)
        if room < len(data):
            self.stats.octets_discarded += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self._pending += data
        self.connect_stats.buffered = len(self._pending)
        if not self._dialing and self._retry is None and self.factory.client is None:
            self._dial_round()

    def _dial_round(self) -> None:
        self._retry = None
        s = self.connect_stats
        s.retry_at = None
        if not self._wanted() or self._dialing or self.factory.client is not None:
            if self.running and self.enabled and self._on_data() and self.factory.client is None \
                    and not self._dialing:
                s.state = CONNECT_IDLE
            return
        if not self._sharing() and not self.ownership.free_for(self.factory):
            self._wait_for_line()
            return
        count = len(self.config.connect_hosts)
        self._round = host_order(count, self.config.connect_host_list, self._next_host)
        self._try_next()

    def _wait_for_line(self) -> None:
        s = self.connect_stats
        s.state = CONNECT_HELD
        s.holder = self.ownership.holder_name
        self.stats.dropped_connects += 1
        log.info("Tunnel {n}: not connecting: the line is in use by {holder}", n=self.number, holder=s.holder)
        self.ownership.when_free(self._line_freed)

    def _line_freed(self) -> None:
        self.connect_stats.holder = ""
        if self.running and self._retry is None:
            self._dial_round()

    def _try_next(self) -> None:
        if not self._round:
            self._round_failed()
            return
        if not self._wanted():
            self._dialing = False
            self._dial_round()
            return
        index = self._round.pop(0)
        text = self.config.connect_hosts[index]
        s = self.connect_stats
        try:
            host = client_endpoint(f"tunnel.{self.number}.connect_hosts", text)
        except ConfigError as e:  # validated already; kept for safety
            self._attempt_failed(index, text, str(e))
            return
        creator = None
        if host.kind == "tls":
            from cmegw.tls.contexts import TlsSetupError, client_creator

            config = self.config
            try:
                creator = client_creator(host, config.connect_tls_ca, config.connect_tls_certificate,
                                         config.connect_tls_key)
            except TlsSetupError as e:
                s.tls_failures += 1
                self._attempt_failed(index, text, str(e))
                return
        self._dialing = True
        self._attempt_host = (index, host)
        self._creator = creator
        s.state = CONNECT_CONNECTING
        s.host = str(host) + (" (TLS)" if creator is not None else "")
        s.host_number = index + 1
        s.attempts += 1
        self.factory.protocol = self._protocol_class(creator is not None)
        try:
            endpoint = self.make_endpoint(self.reactor, host, creator)
            d = self._attempt = endpoint.connect(self.factory)
        except Exception as e:
            self._attempt = None
            self._attempt_failed(index, text, str(e))
            return
        d.addCallbacks(self._tcp_connected, self._tcp_failed, errbackArgs=(index, text, host))

    def _protocol_class(self, tls: bool) -> type:
        base: type = ConnectProtocol
        if self._sharing():
            from cmegw.tunnel.sharing import SharingProtocol

            base = SharingProtocol
            self.factory.sharing = getattr(getattr(self.tunnel(), "factory", None), "sharing", None)
            if self.factory.sharing is None:
                from cmegw.tunnel.sharing import SharingStatistics

                self.factory.sharing = SharingStatistics()
        if tls:
            from cmegw.tls.protocol import tls_protocol

            return tls_protocol(base)
        return base

    def _tcp_connected(self, protocol: Any) -> None:
        self._attempt = None

    def _tcp_failed(self, reason: Failure, index: int, text: str, host: ClientEndpoint) -> None:
        self._attempt = None
        if reason.check(defer.CancelledError) or not self._dialing:
            return
        self._attempt_failed(index, text, connect_failure_text(reason, host))

    def _tls_failed(self, reason: Failure) -> None:
        """The head-end's TLS handshake failed (a refused certificate): counted, explained, next host."""
        if not self._dialing or self._attempt_host is None:
            return
        index, host = self._attempt_host
        why = self._creator.explain(reason) if self._creator is not None else reason.getErrorMessage()
        self.connect_stats.tls_failures += 1
        self._attempt_failed(index, self.config.connect_hosts[index] if index < len(self.config.connect_hosts)
                             else str(host), why)

    def _tls_ended(self, reason: Failure) -> str:
        """A TLS connection that the head-end ended with an alert (a refused client certificate): explained."""
        why = self._creator.explain(reason) if self._creator is not None else reason.getErrorMessage()
        s = self.connect_stats
        s.tls_failures += 1
        index = self._attempt_host[0] if self._attempt_host else 0
        s.last_error = f"connect {index + 1} ({s.host}): {why}"
        s.last_error_at = self.clock.seconds()
        return why

    def _attempt_failed(self, index: int, text: str, why: str) -> None:
        self._dialing = False
        self._attempt_host = None
        s = self.connect_stats
        self.stats.dropped_connects += 1
        s.last_error = f"connect {index + 1} ({text}): {why}"
        s.last_error_at = self.clock.seconds()
        log.warn("Tunnel {n}: cannot connect to {host}: {why}", n=self.number, host=text, why=why)
        if self.running:
            self._try_next()

    def _round_failed(self) -> None:
        self._dialing = False
        s = self.connect_stats
        s.failed_rounds += 1
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        s = self.connect_stats
        config = self.config
        delay = backoff_delay(s.failed_rounds, config.connect_backoff_min, config.connect_backoff_max, self.random)
        s.state = CONNECT_RETRY
        s.retry_at = self.clock.seconds() + delay
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = self.clock.callLater(delay, self._dial_round)
        log.info("Tunnel {n}: connecting again in {s:.1f} s", n=self.number, s=delay)

    # -- the connection -----------------------------------------------------------------

    def _admit(self, protocol: Any) -> bool:
        """The head-end answered (and passed TLS): take the line, or give up if an accept client has it."""
        if self._sharing():
            return True
        peer = describe(protocol.transport.getPeer())
        if self.ownership.claim(self.factory, self.factory.line_data, f"connect-mode peer {peer}"):
            return True
        index = self._attempt_host[0] if self._attempt_host else 0
        self._dialing = False
        self._attempt_host = None
        s = self.connect_stats
        s.last_error = f"connect {index + 1}: the line was taken by {self.ownership.holder_name}"
        s.last_error_at = self.clock.seconds()
        self._wait_for_line()
        return False

    def _connected(self, protocol: Any) -> None:
        index, host = self._attempt_host if self._attempt_host else (0, None)
        self._dialing = False
        self.factory.client = protocol
        now = self.clock.seconds()
        s = self.connect_stats
        s.state = CONNECT_CONNECTED
        s.peer = protocol.peer
        s.host_number = index + 1
        s.last_error = ""
        self.stats.completed_connects += 1
        self._connected_at = self._counted_until = now
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = self.clock
        self._ticker.start(TIME_TICK, now=False)
        if self.config.connect_host_list == "round-robin":
            self._next_host = index + 1
        log.info("Tunnel {n}: connected to {host} ({peer})", n=self.number, host=s.host, peer=protocol.peer)
        if self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            s.buffered = 0
            if hasattr(protocol, "line_data") and not self._sharing():
                protocol.line_data(data)

    def _tick(self) -> None:
        if self._attempt_host is None or self._connected_at is None:
            return
        now = self.clock.seconds()
        index = self._attempt_host[0]
        if index < len(self.stats.connect_times):
            self.stats.connect_times[index] += now - self._counted_until
        self._counted_until = now

    def _gone(self, protocol: Any, why: str) -> None:
        if protocol is not self.factory.client:
            return
        self._tick()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        self.factory.client = None
        self.ownership.release(self.factory)
        now = self.clock.seconds()
        held = now - (self._connected_at or now)
        self._connected_at = None
        self._attempt_host = None
        s = self.connect_stats
        s.peer = ""
        self.stats.disconnects += 1
        if held >= GOOD_CONNECTION:
            s.failed_rounds = 0
        log.info("Tunnel {n}: disconnected from {host}: {why}", n=self.number, host=s.host, why=why)
        restart, self._reconfigured = self._reconfigured, False
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)
        if not self.running:
            s.state = CONNECT_DISABLED
            return
        if restart or not self.enabled:
            self._configure()
            return
        if self._wanted():
            s.failed_rounds += 1
            self._schedule_retry()
        else:
            s.state = CONNECT_IDLE

    def _halt(self, reason: str) -> None:
        """Stop dialling and close the connection (the settings changed, or the gateway stops)."""
        self._dialing = False
        self._round = []
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self.connect_stats.retry_at = None
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.cancel()
        client = self.factory.client
        if client is not None:
            self._reconfigured = True  # its connectionLost starts connect mode again (`_gone`)
            client.close(reason)
        else:
            self._attempt_host = None
        self._pending = bytearray()
        self.connect_stats.buffered = 0
