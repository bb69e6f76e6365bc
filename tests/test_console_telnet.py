"""
Tests for cmegw.console.telnet: the telnet transport of a console session
(`FakeClient`, on StringTransport, serves the session tests too), robust
against garbage and option floods.
"""

from __future__ import annotations

import random
import re

from twisted.conch import telnet
from twisted.internet import task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from cmegw.console.protocol import MAX_LINE, Console, ConsoleProtocol
from cmegw.console.telnet import TelnetConsoleFactory
from tests.test_console_framework import make_gateway

IAC_WILL_ECHO = telnet.IAC + telnet.WILL + telnet.ECHO
IAC_DO_ECHO = telnet.IAC + telnet.DO + telnet.ECHO
IAC_DONT_ECHO = telnet.IAC + telnet.DONT + telnet.ECHO



class FakeClient:
    """The client end of one telnet console connection on a StringTransport."""

    def __init__(self, console: Console, echo: bool = True) -> None:
        self.transport = StringTransport()
        self.protocol = TelnetConsoleFactory(console).buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        if echo:
            self.send(IAC_DO_ECHO)

    @property
    def console(self) -> ConsoleProtocol:
        return self.protocol.protocol.terminal.terminalProtocol

    def send(self, data: bytes | str) -> None:
        """Send as a telnet client does: a CR is followed by LF (or NUL)."""
        raw = data.encode() if isinstance(data, str) else data
        self.protocol.dataReceived(re.sub(rb"\r(?![\n\x00])", b"\r\n", raw))

    def read(self) -> bytes:
        """What the server wrote since the last read, with the telnet negotiation left out."""
        out = self.transport.value()
        self.transport.clear()
        for command in (telnet.WILL, telnet.WONT, telnet.DO, telnet.DONT):
            for option in (telnet.ECHO, telnet.SGA, telnet.NAWS):
                out = out.replace(telnet.IAC + command + option, b"")
        return out

    def text(self) -> str:
        return self.read().decode("utf-8", "replace")

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    @property
    def line(self) -> bytes:
        return b"".join(self.console.lineBuffer)



class RobustnessTests(TestCase):
    """Garbage and option floods neither raise nor grow without bound."""

    def setUp(self):
        self.gateway = make_gateway(self)
        self.clock = task.Clock()
        self.console = Console(self.gateway, self.clock)

    def test_random_garbage(self):
        rng = random.Random(4)
        for _ in range(20):
            client = FakeClient(self.console, echo=rng.random() < 0.5)
            for _ in range(50):
                client.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
            self.assertLessEqual(len(client.console.lineBuffer), MAX_LINE)
            client.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_option_flood(self):
        """Option negotiation up to the pre-login allowance (MAX_PRE_LOGIN_BYTES) is answered; more closes."""
        client = FakeClient(self.console)
        for _ in range(1):
            for command in (telnet.WILL, telnet.WONT, telnet.DO, telnet.DONT):
                client.send(b"".join(telnet.IAC + command + bytes([o]) for o in range(256)))
        client.send(telnet.IAC + telnet.SB + telnet.NAWS + b"\x01" + telnet.IAC + telnet.SE)  # short NAWS
        client.send(telnet.IAC + b"\x01")  # not a telnet command
        client.read()
        client.send("admin\radmin\r")
        self.assertIn("Logged in as admin", client.text())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_endless_subnegotiation_closes(self):
        client = FakeClient(self.console)
        client.send(telnet.IAC + telnet.SB + telnet.NAWS + b"x" * 100000)
        self.assertTrue(client.closed)

    def test_endless_escape_sequence(self):
        client = FakeClient(self.console)
        client.send(b"admin\radmin\r")
        for _ in range(10):
            client.send(b"\x1b[" + b"1" * 10000)
        client.send(b"\x1b[1;5Z\x1b[99~\x1b[;~\x1bOZ")
        client.read()
        client.send(b"show auth\r")
        self.assertIn("Authentication directives", client.text())

    def test_long_line_is_cut(self):
        client = FakeClient(self.console)
        client.send("admin\radmin\r")
        client.send(b"x" * (MAX_LINE * 3))
        self.assertEqual(len(client.line), MAX_LINE)
        client = FakeClient(self.console, echo=False)
        client.send("admin\radmin\r")
        client.send(b"y" * (MAX_LINE * 3))
        self.assertEqual(len(client.line), MAX_LINE)

    def test_non_ascii_is_ignored(self):
        client = FakeClient(self.console)
        client.send("admin\radmin\r")
        client.send("show authé\r".encode())
        self.assertIn("Authentication directives", client.text())
