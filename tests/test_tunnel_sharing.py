"""Tests for cmegw.tunnel.sharing: several clients on one tunnel, one transaction at a time."""

from __future__ import annotations

from typing import Any

import os
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from cmegw.config.model import TunnelConfig
from cmegw.config.settings import apply_setting
from cmegw.config.store import ConfigStore
from cmegw.mbus import frames
from cmegw.mbus.arbiter import BusArbiter
from cmegw.mbus.master import Master
from cmegw.mbus.meterbus import MeterBus, default_meters
from cmegw.mbus.timing import first_byte_timeout
from cmegw.stats import TUNNEL_CONNECTED, TUNNEL_WAITING
from cmegw.tunnel.sharing import (
    CLIENT_QUEUE_LIMIT,
    MAX_CLIENTS,
    PARTIAL_FRAME_TIMEOUT,
    SharingFactory,
    SharingTunnelService,
)
from cmegw.service import GatewayService, Overrides
from cmegw.tunnel.accept import TunnelFactory, TunnelService
from tests.support import open_pty
from cmegw.testing import BusLine, run_clock as run


def connect(factory: SharingFactory, port: int) -> tuple[Any, StringTransport]:
    addr = IPv4Address("TCP", "127.0.0.1", port)
    proto = factory.buildProtocol(addr)
    if proto is None:
        return None, None  # type: ignore[return-value]
    transport = StringTransport(peerAddress=addr)
    proto.makeConnection(transport)
    return proto, transport


class SharingTests(TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.bus = MeterBus(default_meters())
        self.line = BusLine(self.bus, self.clock, delay=0.05)
        self.arbiter = BusArbiter(1, self.line, self.clock)
        self.factory = SharingFactory(1, TunnelConfig(sharing=True), self.arbiter, self.clock)

    def reply(self, address: int) -> bytes:
        """What meter `address` answers to a first REQ_UD2 (a fresh bus, same clock-free state)."""
        bus = MeterBus(default_meters())
        bus.handle(frames.snd_nke(address))
        reply = bus.handle(frames.req_ud2(address))
        assert reply is not None
        return reply

    def test_replies_reach_their_clients_only(self) -> None:
        a, ta = connect(self.factory, 40001)
        b, tb = connect(self.factory, 40002)
        a.dataReceived(frames.snd_nke(1))
        b.dataReceived(frames.snd_nke(2))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1), "b waits for the bus")
        self.clock.pump([0.01] * 10)
        self.assertEqual((ta.value(), tb.value()), (frames.ACK, b""))
        self.clock.pump([0.01] * 10)
        self.assertEqual(tb.value(), frames.ACK)
        a.dataReceived(frames.req_ud2(1))
        b.dataReceived(frames.req_ud2(5))
        self.clock.pump([0.01] * 30)
        self.assertEqual(ta.value(), frames.ACK + self.reply(1))
        self.assertEqual(tb.value(), frames.ACK + self.reply(5))
        s = self.factory.sharing
        self.assertEqual((s.requests, s.replies, s.malformed_frames), (4, 4, 0))
        self.assertEqual(self.factory.stats.octets_from_network, 20)

    def test_frame_split_over_reads_is_reassembled(self) -> None:
        a, ta = connect(self.factory, 40001)
        request = frames.select_secondary("12345678")
        a.dataReceived(request[:3])
        a.dataReceived(request[3:9])
        self.assertEqual(bytes(self.line.written), b"")
        a.dataReceived(request[9:])
        self.assertEqual(bytes(self.line.written), request)
        self.clock.pump([0.01] * 10)
        self.assertEqual(ta.value(), frames.ACK)

    def test_malformed_frames_get_no_bus_time(self) -> None:
        a, ta = connect(self.factory, 40001)
        bad_checksum = b"\x10\x40\x01\x42\x16"
        a.dataReceived(b"\x00\x99" + bad_checksum + b"\x10\x40\x01\x41\x15")
        self.assertEqual(bytes(self.line.written), b"")
        s = self.factory.sharing
        self.assertEqual(s.malformed_frames, 3)
        self.assertEqual(s.malformed_bytes, 12)
        a.dataReceived(frames.snd_nke(1))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1), "a good frame after the garbage goes out")

    def test_partial_frame_dropped_after_its_timeout(self) -> None:
        a, _ = connect(self.factory, 40001)
        a.dataReceived(b"\x68\x10\x10\x68\x53")
        self.clock.advance(PARTIAL_FRAME_TIMEOUT)
        self.assertEqual(self.factory.sharing.malformed_frames, 1)
        a.dataReceived(frames.snd_nke(1))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1))

    def test_a_clients_further_requests_wait_behind_its_own(self) -> None:
        a, ta = connect(self.factory, 40001)
        a.dataReceived(frames.snd_nke(1) + frames.snd_nke(2) + frames.snd_nke(77))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1))
        self.clock.pump([0.01] * 100)
        self.assertEqual(ta.value(), frames.ACK + frames.ACK)
        self.assertEqual(self.factory.sharing.silent, 1)
        a.dataReceived(frames.snd_nke(1) * (CLIENT_QUEUE_LIMIT + 3))
        self.assertEqual(self.factory.sharing.dropped_requests, 2)

    def test_broadcast_expects_no_reply(self) -> None:
        a, _ = connect(self.factory, 40001)
        a.dataReceived(frames.snd_nke(frames.BROADCAST_NOREPLY))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(frames.BROADCAST_NOREPLY), "it goes out")
        self.clock.advance(0.05)
        self.assertFalse(self.arbiter.busy, "no reply window for a broadcast")
        self.assertEqual(self.factory.sharing.requests, 1)

    def test_client_leaving_while_queued(self) -> None:
        a, ta = connect(self.factory, 40001)
        b, tb = connect(self.factory, 40002)
        a.dataReceived(frames.req_ud2(1))
        b.dataReceived(frames.req_ud2(2))
        b.connectionLost(None)
        self.clock.pump([0.01] * 100)
        self.assertEqual(bytes(self.line.written), frames.req_ud2(1), "b's request never went out")
        self.assertEqual(tb.value(), b"")
        a.connectionLost(None)
        self.assertEqual(self.factory.stats.state, TUNNEL_WAITING)
        self.assertEqual(self.factory.stats.disconnects, 2)

    def test_client_leaving_while_on_the_wire(self) -> None:
        a, ta = connect(self.factory, 40001)
        a.dataReceived(frames.req_ud2(1))
        a.connectionLost(None)
        self.clock.pump([0.01] * 100)
        self.assertEqual(ta.value(), b"")
        self.assertFalse(self.arbiter.busy)

    def test_client_limit_and_statistics(self) -> None:
        clients = [connect(self.factory, 41000 + i)[0] for i in range(MAX_CLIENTS)]
        self.assertIsNone(connect(self.factory, 42000)[0])
        s = self.factory.stats
        self.assertEqual((s.completed_accepts, s.dropped_accepts, s.state), (MAX_CLIENTS, 1, TUNNEL_CONNECTED))
        self.assertIn("127.0.0.1:41003", s.peer)
        self.assertEqual(self.factory.sharing.clients, MAX_CLIENTS)
        self.factory.disconnect("test")
        self.assertTrue(all(c.transport.disconnecting for c in clients))

    def test_waiting_for_the_bus_is_not_idling(self) -> None:
        self.factory.apply(TunnelConfig(sharing=True, disconnect_timeout=1))
        self.line.delay = 0.18  # late, but within 330 bit times + 50 ms
        clients = [connect(self.factory, 40001 + i) for i in range(7)]
        for proto, _ in clients:
            proto.dataReceived(frames.req_ud2(1))
        last = clients[-1][1]
        for _ in range(400):
            if last.value():
                break
            self.clock.advance(0.01)
        self.assertGreater(self.clock.seconds(), 1.2, "the last client waited longer than its idle time")
        self.assertTrue(last.value())
        self.assertFalse(last.disconnecting, "waiting for the bus is not idling")
        self.assertTrue(clients[0][1].disconnecting, "the first, answered long ago, was idle")
        self.clock.pump([0.1] * 12)
        self.assertTrue(last.disconnecting, "idle once its answer came")

    def test_stray_bytes_counted(self) -> None:
        self.line.feed(b"\xe5\xe5")
        self.assertEqual(self.factory.stats.octets_discarded, 2)

    def test_scan_does_not_starve_clients(self) -> None:
        """A client's request goes out after at most the transaction on the wire."""
        master = Master(1, self.arbiter, self.clock)
        scan = master.scan_primary()
        self.clock.pump([0.05] * 20)
        a, ta = connect(self.factory, 40001)
        waits = []
        for address in (1, 2, 5, 10, 1, 2):
            a.dataReceived(frames.snd_nke(address))
            asked = self.clock.seconds()
            for _ in range(200):
                if ta.value():
                    break
                self.clock.advance(0.005)
            self.assertEqual(ta.value(), frames.ACK)
            ta.clear()
            waits.append(self.clock.seconds() - asked)
        self.assertTrue(scan.running)
        self.assertLess(max(waits), 2 * (first_byte_timeout(2400, self.arbiter.slack()) + 0.05) + 0.1)
        run(self.clock, scan.deferred)
        self.assertEqual([m.primary for m in scan.found], [1, 2, 5, 10])


class SharingServiceTests(TestCase):
    def test_the_service_listens_with_the_sharing_factory(self) -> None:
        clock = task.Clock()
        arbiter = BusArbiter(1, BusLine(MeterBus([]), clock), clock)
        tunnel = SharingTunnelService(1, TunnelConfig(sharing=True), arbiter, clock)
        self.assertIsInstance(tunnel.factory, SharingFactory)
        self.assertIs(tunnel.factory.stats, tunnel.stats)
        self.assertEqual(arbiter.port.receiver, tunnel.factory.stray)


class GatewayWiringTests(TestCase):
    """GatewayService puts an arbiter and a master on each line, and the tunnel of the configured kind."""

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        master, slave, path = open_pty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        self.store = ConfigStore(directory / "cmegw.toml")
        self.store.load()
        self.gateway = GatewayService(self.store, reactor, Overrides(device=path, tunnel="tcp:0:interface=127.0.0.1"))
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)

    @defer.inlineCallbacks
    def test_sharing_switched_live(self) -> Any:
        gateway = self.gateway
        arbiter = gateway.arbiters[1]
        self.assertIs(arbiter.line, gateway.lines[1])
        self.assertIs(gateway.masters[1].arbiter, arbiter)
        tunnel = gateway.tunnels[1]
        self.assertIsInstance(tunnel.factory, TunnelFactory)
        self.assertIs(tunnel.factory.line, arbiter.port, "the transparent tunnel talks to the arbiter's port")
        self.assertEqual(gateway.lines[1].receiver, tunnel.factory.line_data, "and the line to the tunnel, directly")
        self.store.change(apply_setting(self.store.config, "tunnel.1.sharing", "on"))
        sharing = gateway.tunnels[1]
        self.assertIsInstance(sharing, SharingTunnelService)
        self.assertIs(sharing.stats, tunnel.stats, "the statistics carry over")
        for _ in range(100):
            if sharing.port is not None:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertIsNotNone(sharing.port)
        self.assertIsNone(tunnel.port)
        self.assertEqual(tunnel.parent, None)
        self.store.change(apply_setting(self.store.config, "tunnel.1.sharing", "off"))
        back = gateway.tunnels[1]
        self.assertIs(type(back), TunnelService)
        for _ in range(100):
            if back.port is not None:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertIsNotNone(back.port)
        self.assertEqual(gateway.lines[1].receiver, back.factory.line_data)


class SharingTlsTests(TestCase):
    """Sharing mode over TLS on loopback: a client shares the bus only after a verified handshake."""

    def setUp(self) -> None:
        from tests.test_tunnel_tls import Authority, key_pem, pem, write

        self.pem, self.key_pem = pem, key_pem
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        self.server_ca = Authority("Gateway CA")
        self.clients_ca = Authority("Client CA")
        key, certificate = self.server_ca.issue(["localhost", "127.0.0.1"])
        files = (Path(write(directory, "https.crt", pem(certificate))),
                 Path(write(directory, "https.key", key_pem(key))))
        client_ca = write(directory, "clients.pem", pem(self.clients_ca.certificate))
        self.line = BusLine(MeterBus(default_meters()), reactor, delay=0.01)  # type: ignore[arg-type]
        self.arbiter = BusArbiter(1, self.line, reactor)
        config = TunnelConfig(listen="tcp:0:interface=127.0.0.1", sharing=True, tls=True, tls_client_ca=client_ca)
        self.svc = SharingTunnelService(1, config, self.arbiter, reactor, https_files=lambda: files)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)

    def connect(self, client: Any = None) -> defer.Deferred:
        from twisted.internet import ssl
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS

        from tests.test_tunnel_tls import Client

        own = None
        if client is not None:
            own = ssl.PrivateCertificate.loadPEM(self.pem(client[1]) + self.key_pem(client[0]))
        options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(
            self.pem(self.server_ca.certificate)), clientCertificate=own)
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", self.svc.port.getHost().port))
        return connectProtocol(endpoint, Client())

    @defer.inlineCallbacks
    def test_clients_without_a_good_certificate_are_refused_and_counted(self) -> Any:
        from tests.test_tunnel_tls import wait

        yield wait(lambda: self.svc.port is not None)
        client = yield self.connect()
        yield client.lost
        yield wait(lambda: self.svc.access.tls_refused == 1)
        self.assertIn("the client showed no certificate", self.svc.access.last_refused)
        stranger = yield self.connect(self.server_ca.issue(["stranger"], client=True))
        yield stranger.lost
        yield wait(lambda: self.svc.access.tls_refused == 2)
        self.assertIn("issued by Gateway CA, not by the CA in", self.svc.access.last_refused)
        s = self.svc.stats
        self.assertEqual((s.dropped_accepts, s.completed_accepts, s.disconnects), (2, 0, 0))
        self.assertEqual((self.svc.factory.clients, self.line.requests), ([], []))
        self.assertEqual(self.svc.factory.sharing.clients, 0)

    @defer.inlineCallbacks
    def test_verified_clients_share_the_bus(self) -> Any:
        from tests.test_tunnel_tls import wait

        yield wait(lambda: self.svc.port is not None)
        a = yield self.connect(self.clients_ca.issue(["head-end a"], client=True))
        b = yield self.connect(self.clients_ca.issue(["head-end b"], client=True))
        yield wait(lambda: len(self.svc.factory.clients) == 2)
        a.transport.write(frames.snd_nke(1))
        b.transport.write(frames.snd_nke(5))
        yield wait(lambda: a.received == frames.ACK and b.received == frames.ACK)
        self.assertEqual(sorted(self.line.requests), sorted([frames.snd_nke(1), frames.snd_nke(5)]))
        self.assertEqual((self.svc.stats.completed_accepts, self.svc.access.tls_refused), (2, 0))
        self.assertEqual(self.svc.factory.sharing.replies, 2)
        for client in (a, b):
            client.transport.loseConnection()
            yield client.lost
        yield wait(lambda: not self.svc.factory.clients)
