"""Tests for cmegw.tunnel.accept: the transparent tunnel in accept mode."""

import errno
import os
import socket

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from cmegw.config.model import LineConfig, TunnelConfig
from cmegw.serial.line import SerialLine
from cmegw.stats import TUNNEL_CONNECTED, TUNNEL_DISABLED, TUNNEL_WAITING, TunnelStatistics
from cmegw.testing import FakeLine
from cmegw.tunnel.accept import TunnelFactory, TunnelService
from cmegw.tunnel.base import keepalive_options
from tests.support import open_pty


def connect(factory, port=40001):
    addr = IPv4Address("TCP", "127.0.0.1", port)
    proto = factory.buildProtocol(addr)
    if proto is None:
        return None, None
    transport = StringTransport(peerAddress=addr)
    proto.makeConnection(transport)
    return proto, transport


class TunnelFactoryTests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.line = FakeLine()
        self.factory = TunnelFactory(1, TunnelConfig(), self.line, self.clock, TunnelStatistics())

    def test_bytes_both_ways_unchanged(self):
        proto, transport = connect(self.factory)
        every = bytes(range(256))
        proto.dataReceived(every)
        self.assertEqual(bytes(self.line.written), every)
        self.line.feed(every[::-1])
        self.assertEqual(transport.value(), every[::-1])
        s = self.factory.stats
        self.assertEqual((s.octets_from_network, s.octets_from_serial), (256, 256))
        self.assertEqual((s.completed_accepts, s.state, s.peer), (1, TUNNEL_CONNECTED, "127.0.0.1:40001"))

    def test_line_bytes_without_client_discarded(self):
        self.line.feed(b"\xe5\xe5")
        self.assertEqual(self.factory.stats.octets_discarded, 2)
        self.assertEqual(self.factory.stats.octets_from_serial, 0)

    def test_second_client_refused(self):
        first, _ = connect(self.factory)
        second, _ = connect(self.factory, 40002)
        self.assertIsNone(second)
        self.assertEqual(self.factory.stats.dropped_accepts, 1)
        self.assertIs(self.factory.client, first)

    def test_second_client_replaces(self):
        self.factory.apply(TunnelConfig(on_busy="replace"))
        first, t1 = connect(self.factory)
        second, t2 = connect(self.factory, 40002)
        self.assertIsNotNone(second)
        self.assertTrue(t1.disconnecting)
        self.assertIs(self.factory.client, second)
        self.line.feed(b"x")
        self.assertEqual((t1.value(), t2.value()), (b"", b"x"))
        first.connectionLost(None)
        self.assertIs(self.factory.client, second)
        s = self.factory.stats
        self.assertEqual((s.completed_accepts, s.disconnects, s.dropped_accepts), (2, 1, 0))

    def test_idle_disconnect_on_time(self):
        proto, transport = connect(self.factory)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"a")
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting, "data from the network restarts the idle time")
        self.line.feed(b"b")
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting, "data from the line restarts the idle time")
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        s = self.factory.stats
        self.assertEqual((s.disconnects, s.state), (1, TUNNEL_WAITING))
        self.assertAlmostEqual(s.accept_connection_time(self.clock.seconds()), 29.8, places=3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_disconnect_off(self):
        self.factory.apply(TunnelConfig(disconnect_timeout=0))
        proto, transport = connect(self.factory)
        self.clock.advance(10000)
        self.assertFalse(transport.disconnecting)

    def test_timeout_change_applies_to_current_client(self):
        proto, transport = connect(self.factory)
        self.factory.apply(TunnelConfig(disconnect_timeout=3))
        self.clock.advance(3)
        self.assertTrue(transport.disconnecting)

    def test_flow_control_registered(self):
        proto, transport = connect(self.factory)
        self.assertIs(transport.producer, self.line, "a client that does not read pauses the line")
        self.assertTrue(transport.streaming)
        self.assertIs(self.line._producer, transport, "a full line pauses the client")
        proto.connectionLost(None)
        self.assertIsNone(self.line._producer)


class TunnelServiceRealTests(TestCase):
    """A real listening socket on loopback."""

    def setUp(self):
        self.line = FakeLine()
        self.svc = TunnelService(1, TunnelConfig(listen="tcp:0:interface=127.0.0.1"), self.line, reactor)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)

    def port(self):
        return self.svc.port.getHost().port

    @defer.inlineCallbacks
    def wait(self, condition, timeout=5.0):
        for _ in range(int(timeout / 0.01)):
            if condition():
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail("condition not met in time")

    @defer.inlineCallbacks
    def test_keepalive_on_socket(self):
        yield self.wait(lambda: self.svc.port is not None)
        client = socket.create_connection(("127.0.0.1", self.port()))
        self.addCleanup(client.close)
        yield self.wait(lambda: self.svc.factory.client is not None)
        sock = self.svc.factory.client.transport.socket
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        idle, interval, count = keepalive_options(45)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), idle)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), interval)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT), count)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
        self.svc.apply(TunnelConfig(listen=self.svc.config.listen, keepalive=0))
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 0)

    @defer.inlineCallbacks
    def test_disable_and_enable(self):
        yield self.wait(lambda: self.svc.port is not None)
        port = self.port()
        yield self.svc.apply(TunnelConfig(listen=f"tcp:{port}:interface=127.0.0.1", enabled=False))
        self.assertEqual(self.svc.stats.state, TUNNEL_DISABLED)
        self.assertRaises(OSError, socket.create_connection, ("127.0.0.1", port))
        yield self.svc.apply(TunnelConfig(listen=f"tcp:{port}:interface=127.0.0.1"))
        yield self.wait(lambda: self.svc.port is not None)
        socket.create_connection(("127.0.0.1", port)).close()

    @defer.inlineCallbacks
    def test_port_in_use_retried(self):
        yield self.wait(lambda: self.svc.port is not None)
        other = TunnelService(2, TunnelConfig(listen=f"tcp:{self.port()}:interface=127.0.0.1"), FakeLine(),
                              reactor)
        other.startService()
        self.addCleanup(other.stopService)
        yield self.wait(lambda: other.stats.state == "listen failed")
        self.assertIn("cannot listen on", other.stats.error)
        self.assertIsNotNone(other._retry)
        ready = other.when_listening()
        self.assertFalse(ready.called, "not listening: systemd's READY waits")
        yield self.svc.stopService()
        other._retry.cancel()
        other._listen()  # the retry, without waiting its 5 s
        yield ready
        self.assertIsNotNone(other.port)
        self.assertTrue(other.when_listening().called)


class BackPressureTests(TestCase):
    """A real pty line and a real socket: memory stays bounded when one side stalls."""

    def setUp(self):
        self.master, self.slave, path = open_pty()
        self.addCleanup(os.close, self.slave)
        self.line = SerialLine(1, LineConfig(device=path), reactor)
        self.line.startService()
        self.addCleanup(self.line.stopService)
        self.svc = TunnelService(1, TunnelConfig(listen="tcp:0:interface=127.0.0.1", disconnect_timeout=0),
                                 self.line, reactor)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)

    def tearDown(self):
        try:
            os.close(self.master)
        except OSError:
            pass

    @defer.inlineCallbacks
    def settle(self, seconds=0.3):
        yield task.deferLater(reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def test_client_not_reading_pauses_line(self):
        client = socket.create_connection(("127.0.0.1", self.svc.port.getHost().port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.addCleanup(client.close)
        yield self.settle(0.1)
        os.set_blocking(self.master, False)
        chunk = b"\x55" * 4096
        accepted = 0
        for _ in range(40):  # bounded: at most 40 rounds of up to 2 MB each
            for _ in range(512):
                try:
                    accepted += os.write(self.master, chunk)
                except OSError as e:
                    self.assertEqual(e.errno, errno.EAGAIN)
                    break
            yield self.settle(0.05)
        transport = self.svc.factory.client.transport
        buffered = len(transport.dataBuffer) + transport._tempDataLen
        self.assertLess(accepted, 16 * 1024 * 1024, "the line stopped reading")
        self.assertLess(buffered, 4 * 1024 * 1024, "the gateway's buffer stays bounded")
        self.assertTrue(self.line.transport is not None)

    @defer.inlineCallbacks
    def test_line_not_draining_pauses_client(self):
        client = socket.create_connection(("127.0.0.1", self.svc.port.getHost().port))
        self.addCleanup(client.close)
        client.setblocking(False)
        yield self.settle(0.1)
        sent = 0
        chunk = b"\xaa" * 65536
        for _ in range(40):
            for _ in range(64):
                try:
                    sent += client.send(chunk)
                except BlockingIOError:
                    break
            yield self.settle(0.05)
        serial = self.line.transport
        buffered = len(serial.dataBuffer) + serial._tempDataLen
        self.assertLess(sent, 64 * 1024 * 1024, "the client was paused")
        self.assertLess(buffered, 4 * 1024 * 1024)
