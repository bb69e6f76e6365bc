#!/usr/bin/env python3
"""
twrelay, the least a Twisted relay can do, measured beside the gateways (``--with-twrelay``).

    gwbench_twrelay.py DEVICE PORT [--plain]

Twisted's stock epoll reactor, a ``twisted.internet.serialport.SerialPort`` on the pty and a TCP
listener on 127.0.0.1:PORT; a new client replaces the old one; flow control both ways with
Twisted's producers.  A chunk is written at once with one system call when nothing is queued,
the rest through ``transport.write`` (so order and flow control stay Twisted's): the same rule
as cmegw's byte path, without anything else of cmegw.  ``--plain`` writes with
``transport.write`` only, which waits for the reactor's next turn on every hop.

Between pyrelay (a bare epoll loop, no Twisted) and cmegw, it shows what Twisted's loop
itself costs: cmegw / twrelay is cmegw's own share of the added latency.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor, tcp  # noqa: E402
from twisted.internet.interfaces import IPushProducer  # noqa: E402
from twisted.internet.serialport import SerialPort  # noqa: E402
from zope.interface import implementer  # noqa: E402


def immediate_writer(transport: Any, send: Callable[[bytes], int]) -> Callable[[bytes], None]:
    """Write at once when nothing is queued; what the kernel does not take goes to transport.write."""
    queue = transport.write

    def write(data: bytes) -> None:
        if transport.dataBuffer or transport._tempDataBuffer or transport.disconnecting:
            queue(data)
            return
        try:
            sent = send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            queue(data)
            return
        if sent < len(data):
            queue(data[sent:])

    return write


class Line(protocol.Protocol):
    """The pty's side: what it reads goes to the current client."""

    def __init__(self, relay: "Relay") -> None:
        self.relay = relay

    def dataReceived(self, data: bytes) -> None:
        client = self.relay.client
        if client is not None:
            client.write_out(data)


@implementer(IPushProducer)
class PortProducer:
    """The pty as the client's producer: paused and resumed with it, kept open when a client goes."""

    def __init__(self, port: SerialPort) -> None:
        self.port = port

    def pauseProducing(self) -> None:
        self.port.pauseProducing()

    def resumeProducing(self) -> None:
        self.port.resumeProducing()

    def stopProducing(self) -> None:
        pass


class Client(protocol.Protocol):
    def __init__(self, relay: "Relay") -> None:
        self.relay = relay
        self.write_out: Callable[[bytes], None] = lambda data: None

    def connectionMade(self) -> None:
        relay, port = self.relay, self.relay.port
        old, relay.client = relay.client, self
        if old is not None:
            port.unregisterProducer()
            old.transport.abortConnection()
        self.transport.setTcpNoDelay(True)
        if relay.plain:
            self.write_out = self.transport.write
        else:
            assert isinstance(self.transport, tcp.Connection)
            self.write_out = immediate_writer(self.transport, self.transport.socket.send)
        self.transport.registerProducer(PortProducer(port), True)
        port.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.relay.write_line(data)

    def connectionLost(self, reason: Any = None) -> None:
        relay = self.relay
        if relay.client is self:
            relay.client = None
            relay.port.unregisterProducer()
            relay.port.resumeProducing()


class Relay(protocol.Factory):
    def __init__(self, device: str, plain: bool) -> None:
        self.plain = plain
        self.client: Client | None = None
        self.port = SerialPort(Line(self), device, reactor, baudrate=115200)
        self.write_line = self.port.write if plain else immediate_writer(
            self.port, lambda data: os.write(self.port.fileno(), data))

    def buildProtocol(self, addr: Any) -> Client:
        return Client(self)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plain = "--plain" in argv
    args = [a for a in argv if a != "--plain"]
    if len(args) != 2 or not args[1].isdigit():
        print("usage: gwbench_twrelay.py DEVICE PORT [--plain]", file=sys.stderr)
        return 2
    relay = Relay(args[0], plain)
    reactor.listenTCP(int(args[1]), relay, interface="127.0.0.1")
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
