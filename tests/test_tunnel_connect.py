"""Tests for cmegw.tunnel.connect: connect mode (dial-out), with a fake endpoint and task.Clock."""

from twisted.internet import defer, error, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from cmegw.config.model import TunnelConfig
from cmegw.config.settings import apply_setting
from cmegw.console.commands import COMMANDS, Session
from cmegw.stats import TunnelStatistics
from cmegw.testing import FakeLine
from cmegw.tunnel.accept import TunnelService
from cmegw.tunnel.connect import (
    CONNECT_CONNECTED,
    CONNECT_HELD,
    CONNECT_IDLE,
    CONNECT_RETRY,
    GOOD_CONNECTION,
    ON_DATA_LIMIT,
    ConnectTunnelService,
    LineOwnership,
)
from tests.web_helpers import PagesTestBase

HOSTS = ("tcp:host=10.0.0.1:port=9001", "tcp:host=10.0.0.2:port=9002", "tcp:host=10.0.0.3:port=9003")


class FakeEndpoints:
    """Records each dial; the test answers or refuses it."""

    def __init__(self):
        self.dials = []

    def __call__(self, reactor, host, creator):
        owner = self

        class Endpoint:
            def connect(self, factory):
                d = defer.Deferred()
                owner.dials.append((host, factory, d))
                return d

        return Endpoint()

    @property
    def hosts(self):
        return [f"{h.host}:{h.port}" for h, _, _ in self.dials]

    def answer(self, i=-1):
        host, factory, d = self.dials[i]
        address = IPv4Address("TCP", host.host, host.port)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        d.callback(protocol)
        return protocol, transport

    def refuse(self, i=-1):
        self.dials[i][2].errback(Failure(error.ConnectionRefusedError()))


def lose(protocol):
    protocol.connectionLost(Failure(error.ConnectionDone()))


class ConnectBase(TestCase):
    hosts = HOSTS

    def setUp(self):
        self.clock = task.Clock()
        self.line = FakeLine()
        self.stats = TunnelStatistics()
        self.endpoints = FakeEndpoints()
        self.jitter = 0.0

    def start(self, **settings):
        settings.setdefault("connect_mode", "always")
        settings.setdefault("connect_hosts", self.hosts)
        self.config = TunnelConfig(**settings)
        ownership = LineOwnership(self.line)
        self.accept = TunnelService(1, self.config, self.line, self.clock, self.stats, ownership=ownership)
        self.connector = ConnectTunnelService(1, lambda: self.accept, self.line, self.clock, self.stats,
                                              ownership=ownership, random=lambda: self.jitter,
                                              endpoint=self.endpoints)
        self.connector.startService()
        self.addCleanup(self.stop)
        return self.connector

    def stop(self):
        stopped = self.connector.stopService()
        client = self.connector.factory.client
        if client is not None:
            lose(client)  # what the transport does once it has closed
        return stopped

    def apply(self, config):
        """A changed section, handed as the gateway hands it: to the tunnel that holds it, then to connect mode."""
        self.accept.apply(config)
        self.connector.apply(self.accept.config)

    def refuse_round(self):
        for _ in range(len(self.config.connect_hosts)):
            self.endpoints.refuse()

    def next_delay(self):
        calls = [c for c in self.clock.getDelayedCalls() if c.active()]
        self.assertEqual(len(calls), 1, calls)
        return calls[0].getTime() - self.clock.seconds()

    def accept_client(self, port=40001):
        address = IPv4Address("TCP", "127.0.0.1", port)
        protocol = self.accept.factory.buildProtocol(address)
        if protocol is None:
            return None, None
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport


class BackoffTests(ConnectBase):
    def test_first_retry_growth_and_cap(self):
        self.start()
        waits = []
        for _ in range(9):
            self.refuse_round()
            waits.append(self.next_delay())
            self.clock.advance(waits[-1])
        self.assertEqual(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60])
        self.assertEqual(self.stats.dropped_connects, 27)
        self.assertEqual(self.connector.connect_stats.failed_rounds, 9)

    def test_jitter_stays_within_bounds(self):
        self.jitter = 0.999
        self.start(connect_backoff_min=2, connect_backoff_max=30)
        waits = []
        for _ in range(6):
            self.refuse_round()
            waits.append(self.next_delay())
            self.clock.advance(waits[-1])
        self.assertTrue(all(2 <= w <= 30 for w in waits), waits)
        self.assertAlmostEqual(waits[0], 2 * 1.4995)
        self.assertEqual(waits[-1], 30)

    def test_state_counts_down(self):
        self.start()
        self.refuse_round()
        stats = self.connector.connect_stats
        self.assertEqual(stats.state, CONNECT_RETRY)
        self.assertEqual(stats.text(self.clock.seconds()), "waiting 1 s before retry")
        self.assertIn("connection refused", stats.last_error)
        self.clock.advance(1)
        self.refuse_round()
        self.assertEqual(stats.text(self.clock.seconds()), "waiting 2 s before retry")
        self.clock.advance(1.2)
        self.assertEqual(stats.text(self.clock.seconds()), "waiting 1 s before retry")

    def test_reset_after_a_good_connection(self):
        self.start()
        for _ in range(3):
            self.refuse_round()
            self.clock.advance(self.next_delay())
        protocol, _ = self.endpoints.answer()  # the fourth round: the first host answers
        self.assertEqual(self.connector.connect_stats.state, CONNECT_CONNECTED)
        self.clock.advance(GOOD_CONNECTION)
        lose(protocol)
        self.assertEqual(self.next_delay(), 1, "after a connection that held, the first wait again")

    def test_short_connection_keeps_growing(self):
        self.start()
        for _ in range(3):
            self.refuse_round()
            self.clock.advance(self.next_delay())
        protocol, _ = self.endpoints.answer()
        self.clock.advance(GOOD_CONNECTION / 2)
        lose(protocol)
        self.assertEqual(self.next_delay(), 8, "a head-end that drops at once does not reset the back-off")

    def test_lost_connection_redialled_within_the_first_wait(self):
        self.start()
        protocol, _ = self.endpoints.answer()
        self.clock.advance(60)
        lose(protocol)
        self.assertEqual(self.next_delay(), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.endpoints.dials), 2)


class HostListTests(ConnectBase):
    def test_sequential_first_that_answers(self):
        self.start()
        self.endpoints.refuse()
        protocol, _ = self.endpoints.answer()
        self.assertEqual(self.endpoints.hosts, ["10.0.0.1:9001", "10.0.0.2:9002"])
        stats = self.connector.connect_stats
        self.assertEqual(stats.text(self.clock.seconds()), "connected to 10.0.0.2:9002")
        self.assertEqual(stats.host_number, 2)
        self.clock.advance(GOOD_CONNECTION)
        lose(protocol)
        self.clock.advance(self.next_delay())
        self.assertEqual(self.endpoints.hosts[-1], "10.0.0.1:9001", "sequential starts from the top again")

    def test_round_robin_next_each_time(self):
        self.start(connect_host_list="round-robin")
        protocol, _ = self.endpoints.answer()
        self.clock.advance(GOOD_CONNECTION)
        lose(protocol)
        self.clock.advance(self.next_delay())
        protocol, _ = self.endpoints.answer()
        lose(protocol)
        self.clock.advance(self.next_delay())
        self.endpoints.refuse()
        self.endpoints.answer()
        self.assertEqual(self.endpoints.hosts, ["10.0.0.1:9001", "10.0.0.2:9002", "10.0.0.3:9003",
                                                "10.0.0.1:9001"])

    def test_connection_time_per_host(self):
        self.start()
        self.endpoints.refuse()
        protocol, _ = self.endpoints.answer()
        self.clock.pump([1.0] * 75)
        self.assertEqual(self.stats.connect_times[1], 75.0, "counted while connected, every second")
        self.clock.advance(0.5)
        lose(protocol)
        self.assertEqual(self.stats.connect_times[:3], [0.0, 75.5, 0.0])
        self.assertEqual((self.stats.completed_connects, self.stats.dropped_connects, self.stats.disconnects),
                         (1, 1, 1))


class ByteTests(ConnectBase):
    def test_bytes_both_ways_and_disconnect_timeout(self):
        self.start()
        protocol, transport = self.endpoints.answer()
        self.assertEqual(self.line.receiver, self.connector.factory.line_data,
                         "the line calls the connect tunnel's receiver directly, as in accept mode")
        every = bytes(range(256))
        protocol.dataReceived(every)
        self.assertEqual(bytes(self.line.written), every)
        self.line.feed(every[::-1])
        self.assertEqual(transport.value(), every[::-1])
        self.assertEqual((self.stats.octets_from_network, self.stats.octets_from_serial), (256, 256))
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting, "the disconnect timeout applies as in accept mode")

    def test_on_data_waits_for_the_line(self):
        self.start(connect_mode="on-data")
        self.assertEqual(self.endpoints.dials, [])
        self.assertEqual(self.connector.connect_stats.state, CONNECT_IDLE)
        self.line.feed(b"\x68\x03\x03\x68")
        self.line.feed(b"\x08\x01\x72")
        self.assertEqual(len(self.endpoints.dials), 1, "the line's bytes start one connection")
        protocol, transport = self.endpoints.answer()
        self.assertEqual(transport.value(), b"\x68\x03\x03\x68\x08\x01\x72", "kept and sent once connected")
        self.assertEqual(self.stats.octets_discarded, 0)

    def test_on_data_buffer_bounded(self):
        self.start(connect_mode="on-data")
        self.line.feed(b"a" * 3000)
        self.line.feed(b"b" * 3000)
        self.assertEqual(self.connector.connect_stats.buffered, ON_DATA_LIMIT)
        self.assertEqual(self.stats.octets_discarded, 6000 - ON_DATA_LIMIT)
        self.refuse_round()
        self.line.feed(b"c" * 10)
        self.assertEqual(self.stats.octets_discarded, 6010 - ON_DATA_LIMIT, "still bounded while waiting")
        self.clock.advance(self.next_delay())
        protocol, transport = self.endpoints.answer()
        self.assertEqual(transport.value(), b"a" * 3000 + b"b" * (ON_DATA_LIMIT - 3000))

    def test_on_data_idle_again_after_the_connection(self):
        self.start(connect_mode="on-data")
        self.line.feed(b"x")
        protocol, _ = self.endpoints.answer()
        lose(protocol)
        self.assertEqual(self.connector.connect_stats.state, CONNECT_IDLE)
        self.assertEqual(self.clock.getDelayedCalls(), [], "nothing to send: no redial")


class OwnershipTests(ConnectBase):
    def test_connect_peer_holds_the_line(self):
        self.start()
        peer, peer_transport = self.endpoints.answer()
        client, _ = self.accept_client()
        self.assertIsNone(client, "an accept-mode client is refused while the connect peer holds the line")
        self.assertEqual(self.stats.dropped_accepts, 1)
        self.line.feed(b"\xe5")
        self.assertEqual(peer_transport.value(), b"\xe5")
        lose(peer)
        client, transport = self.accept_client()
        self.assertIsNotNone(client, "the line is free again")
        self.line.feed(b"\x10")
        self.assertEqual(transport.value(), b"\x10")

    def test_accept_client_holds_the_line(self):
        self.start(connect_mode="disabled")
        client, transport = self.accept_client()
        self.apply(TunnelConfig(connect_mode="always", connect_hosts=HOSTS))
        self.assertEqual(self.endpoints.dials, [], "no dial while an accept-mode client holds the line")
        stats = self.connector.connect_stats
        self.assertEqual(stats.state, CONNECT_HELD)
        self.assertEqual(stats.text(0), "waiting for the line (in use by accept-mode client 127.0.0.1:40001)")
        self.assertEqual(self.stats.dropped_connects, 1)
        self.line.feed(b"\xe5")
        self.assertEqual(transport.value(), b"\xe5")
        lose(client)
        self.assertEqual(len(self.endpoints.dials), 1, "dialled as soon as the line is free")
        peer, peer_transport = self.endpoints.answer()
        self.line.feed(b"\x16")
        self.assertEqual(peer_transport.value(), b"\x16")

    def test_line_taken_while_dialling(self):
        self.start()
        client, _ = self.accept_client()  # gets in while the dial is under way
        self.assertIsNotNone(client)
        protocol, transport = self.endpoints.answer()
        self.assertTrue(transport.disconnecting, "the head-end's connection is dropped: the line is taken")
        self.assertEqual(self.stats.dropped_connects, 1)
        self.assertEqual(self.connector.connect_stats.state, CONNECT_HELD)
        lose(protocol)
        lose(client)
        self.assertEqual(len(self.endpoints.dials), 2)

    def test_on_data_bytes_go_to_the_accept_client(self):
        self.start(connect_mode="on-data")
        client, transport = self.accept_client()
        self.line.feed(b"abc")
        self.assertEqual(transport.value(), b"abc")
        self.assertEqual(self.endpoints.dials, [], "the accept client's traffic starts no connection")

    def test_disabled_leaves_accept_mode_as_it_was(self):
        self.start(connect_mode="disabled")
        self.assertIsNone(self.connector.ownership.holder)
        self.assertEqual(self.line.receiver, self.accept.factory.line_data)
        self.assertEqual(self.connector.connect_stats.text(0), "disabled")

    def test_disabling_live_closes_and_gives_the_line_back(self):
        self.start()
        peer, transport = self.endpoints.answer()
        self.apply(TunnelConfig())
        self.assertTrue(transport.disconnecting)
        lose(peer)
        self.assertEqual(self.connector.connect_stats.text(0), "disabled")
        self.assertIsNone(self.connector.ownership.holder)
        self.assertEqual(self.line.receiver, self.accept.factory.line_data)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        client, _ = self.accept_client()
        self.assertIsNotNone(client)

    def test_new_hosts_applied_live(self):
        self.start()
        self.refuse_round()
        self.apply(TunnelConfig(connect_mode="always", connect_hosts=("tcp:host=10.9.9.9:port=1",)))
        self.assertEqual(self.endpoints.hosts[-1], "10.9.9.9:1", "a new host list is dialled at once")


class TlsSetupTests(ConnectBase):
    hosts = ("tls:host=headend.example:port=4443",)

    def test_unreadable_ca_bundle_counted_and_said(self):
        self.start(connect_tls_ca="/nonexistent/ca.pem")
        stats = self.connector.connect_stats
        self.assertEqual(self.endpoints.dials, [])
        self.assertEqual((self.stats.dropped_connects, stats.tls_failures), (1, 1))
        self.assertIn("cannot read the CA bundle (connect_tls_ca) /nonexistent/ca.pem", stats.last_error)
        self.assertEqual(stats.state, CONNECT_RETRY)


class GatewayWiringTests(TestCase):
    """The gateway builds a connect tunnel per tunnel and applies its settings live."""

    def test_connect_mode_switched_on_live(self):
        from cmegw.config.store import ConfigStore
        from cmegw.service import GatewayService
        from twisted.internet import reactor

        path = self.mktemp()
        store = ConfigStore(path)
        store.load()
        store.change(store.config.with_tunnel(1, TunnelConfig(listen="tcp:0:interface=127.0.0.1")))
        gateway = GatewayService(store, reactor)
        gateway.startService()
        self.addCleanup(gateway.stopService)
        published = gateway.state.connect_stats[1]
        self.assertEqual(published.text(0), "disabled")
        self.assertEqual(gateway.connectors, {}, "connect mode is built once the configuration turns it on")
        new = apply_setting(store.config, "tunnel.1.connect_hosts", "tcp:host=127.0.0.1:port=1")
        new = apply_setting(new, "tunnel.1.connect_mode", "on-data")
        store.change(new)
        connector = gateway.connectors[1]
        self.assertTrue(connector.running, "started at once")
        self.assertIs(connector.connect_stats, published, "it shows its state where the gateway published it")
        self.assertEqual(gateway.state.connect_stats[1].state, CONNECT_IDLE)
        self.assertIs(gateway.tunnels[1].factory.ownership, connector.ownership,
                      "one ownership, given to both at construction")
        self.assertIsNone(connector.ownership.holder)
        self.assertIs(connector.config, gateway.tunnels[1].config)


class FrontEndTests(PagesTestBase):
    """Connect mode, TLS and allow-list settings on the M-Bus TCP/IP page, the API, Status and the console."""

    real_gateway = True

    @defer.inlineCallbacks
    def test_connect_tab_form_status_api_console(self):
        pages = self
        response, body = yield pages.get("/tcpip/connect")
        self.assertEqual(response.code, 200)
        for name in ("tunnel.1.connect_mode", "tunnel.1.connect_hosts", "tunnel.1.connect_host_list",
                     "tunnel.1.connect_backoff_min", "tunnel.1.connect_backoff_max", "tunnel.1.connect_tls_ca",
                     "tunnel.1.connect_tls_certificate", "tunnel.1.connect_tls_key"):
            self.assertIn(f'name="{name}"', body)
        _, body = yield pages.get("/tcpip/accept")
        for name in ("tunnel.1.allow_list", "tunnel.1.tls", "tunnel.1.tls_client_ca", "tunnel.1.rfc2217"):
            self.assertIn(f'name="{name}"', body)
        form = {"_group": "1", "tunnel.1.connect_mode": "on-data", "tunnel.1.connect_host_list": "sequential",
                "tunnel.1.connect_backoff_min": "1", "tunnel.1.connect_backoff_max": "60",
                "tunnel.1.connect_tls_ca": "", "tunnel.1.connect_tls_certificate": "", "tunnel.1.connect_tls_key": "",
                "tunnel.1.connect_hosts": ", ".join(f"tcp:host=127.0.0.1:port={i + 1}" for i in range(13))}
        response, body = yield pages.post("/tcpip/connect", form)
        self.assertEqual(response.code, 400)
        self.assertIn("Remote hosts of tunnel 1: 13 hosts; use at most 12 hosts", body)
        self.assertEqual(pages.store.config.tunnels[1].connect_mode, "disabled", "nothing is half-applied")
        form["tunnel.1.connect_hosts"] = "tcp:host=127.0.0.1:port=1"
        response, body = yield pages.post("/tcpip/connect", form)
        self.assertEqual(response.code, 200)
        self.assertIn("Applied at once", body)
        self.assertEqual(pages.gateway.state.connect_stats[1].state, CONNECT_IDLE)
        _, body = yield pages.get("/tcpip")
        self.assertIn("waiting for data from the line", body)
        _, body = yield pages.get("/status")
        self.assertIn("waiting for data from the line", body)
        response, status = yield pages.api("GET", "/api/status")
        self.assertEqual(status["tunnels"]["1"]["connect_mode"], "waiting for data from the line")
        response, stats = yield pages.api("GET", "/api/stats")
        self.assertEqual(stats["tunnels"]["1"]["connect"]["state"], CONNECT_IDLE)
        response, error_body = yield pages.api("PUT", "/api/settings", {"tunnel.1.allow_list": ["10.0.0.0/33"]})
        self.assertEqual(response.code, 400)
        self.assertEqual(error_body["setting"], "tunnel.1.allow_list")
        response, changed = yield pages.api("PUT", "/api/settings", {"tunnel.1.allow_list": "192.0.2.0/24, ::1"})
        self.assertEqual(changed["applied_now"], ["tunnel.1.allow_list"])
        session = Session(pages.gateway, user="admin")
        text = COMMANDS.run(session, "show tunnel 1")
        self.assertIn("Connect mode", text)
        self.assertIn("waiting for data from the line", text)
        self.assertIn("tcp:host=127.0.0.1:port=1", text)
        self.assertIn("192.0.2.0/24, ::1", text)
        text = COMMANDS.run(session, "show status")
        self.assertIn("connect mode: waiting for data from the line", text)


class SharingTests(TestCase):
    """With sharing on, the connect-mode peer is one more sharing client: no one holds the line alone."""

    def test_connect_peer_and_accept_clients_share_the_bus(self):
        from cmegw.mbus import frames
        from cmegw.mbus.meterbus import MeterBus, default_meters
        from cmegw.mbus.arbiter import BusArbiter
        from cmegw.tunnel.sharing import SharingTunnelService
        from cmegw.testing import BusLine

        clock = task.Clock()
        line = BusLine(MeterBus(default_meters()), clock, delay=0.05)
        arbiter = BusArbiter(1, line, clock)
        config = TunnelConfig(sharing=True, connect_mode="on-data", connect_hosts=HOSTS[:1])
        accept = SharingTunnelService(1, config, arbiter, clock)
        endpoints = FakeEndpoints()
        connector = ConnectTunnelService(1, lambda: accept, arbiter.port, clock, accept.stats, arbiter=arbiter,
                                         endpoint=endpoints, random=lambda: 0.0)
        connector.startService()
        self.assertEqual(len(endpoints.dials), 1, "in sharing mode on-data behaves as always")
        peer, peer_transport = endpoints.answer()
        address = IPv4Address("TCP", "127.0.0.1", 40001)
        client = accept.factory.buildProtocol(address)
        self.assertIsNotNone(client, "an accept client is not refused: the bus is shared")
        client_transport = StringTransport(peerAddress=address)
        client.makeConnection(client_transport)
        peer.dataReceived(frames.snd_nke(1))
        client.dataReceived(frames.snd_nke(2))
        clock.pump([0.01] * 40)
        self.assertEqual((peer_transport.value(), client_transport.value()), (frames.ACK, frames.ACK))
        self.assertEqual(accept.factory.sharing.requests, 2, "the connect peer's requests are counted too")
        self.assertEqual(self.connector_state(connector, clock), "connected to 10.0.0.1:9001")
        peer.transport.loseConnection()
        peer.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(accept.stats.completed_connects, 1)
        connector.stopService()

    @staticmethod
    def connector_state(connector, clock):
        return connector.connect_stats.text(clock.seconds())
