"""Tests for cmegw.fastpath and cmegw.reactor: the byte path's write-at-once and the lean reactor."""

import os
import socket

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from cmegw.fastpath import fast_writer
from cmegw.reactor import GatewayReactor


class Collect(Protocol):
    def connectionMade(self):
        self.factory.connected.callback(self)


class FastWriterTests(TestCase):
    def test_memory_transport_uses_write(self):
        t = StringTransport()
        fast_writer(t)(b"abc")
        self.assertEqual(t.value(), b"abc")

    @defer.inlineCallbacks
    def test_tcp_writes_before_the_reactor_turns(self):
        factory = ServerFactory.forProtocol(Collect)
        factory.connected = defer.Deferred()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        proto = yield factory.connected
        write = fast_writer(proto.transport)
        write(b"now")
        self.assertEqual(proto.transport.dataBuffer + b"".join(proto.transport._tempDataBuffer), b"")
        client.settimeout(2)
        self.assertEqual(client.recv(10), b"now", "sent by the call itself, no reactor turn needed")
        proto.transport.write(b"queued-")
        write(b"after")
        self.assertIn(b"after", b"".join(proto.transport._tempDataBuffer), "order kept behind queued bytes")
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(client.recv(100), b"queued-after")
        proto.transport.loseConnection()


class GatewayReactorTests(TestCase):
    def test_runs_io_and_timers(self):
        """The lean reactor is a working reactor: a pipe read and a timer."""
        r = GatewayReactor()
        rfd, wfd = os.pipe()
        self.addCleanup(os.close, wfd)
        from twisted.internet.abstract import FileDescriptor

        got = []

        class Reader(FileDescriptor):
            def fileno(self):
                return rfd

            def doRead(self):
                got.append(os.read(rfd, 100))
                r.stop()

        reader = Reader(r)
        r.addReader(reader)
        r.callLater(0.01, os.write, wfd, b"ping")
        r.callLater(5, r.stop)
        r.run()
        r.removeReader(reader)
        os.close(rfd)
        self.assertEqual(got, [b"ping"])

    def test_reactor_plugin(self):
        from twisted.application.reactors import getReactorTypes

        self.assertIn("cmegw", [r.shortName for r in getReactorTypes()])
