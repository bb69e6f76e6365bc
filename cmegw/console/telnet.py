# -*- test-case-name: tests.test_console_protocol -*-
"""
The telnet transport of the console: Twisted's telnet layer made robust,
the negotiation of a terminal session (server echo, no go-aheads, window
size), and the factory that builds the stack of one connection over a
`cmegw.console.protocol.ConsoleProtocol`.
"""

from __future__ import annotations

from typing import Any

from twisted.conch import telnet
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.console.protocol import Console, ConsoleProtocol, ConsoleTerminal

log = Logger(namespace="cmegw.console")

#: Bytes a client may send (telnet negotiation included) before it has logged in.
MAX_PRE_LOGIN_BYTES = 4096


class TelnetTransport(telnet.TelnetTransport):
    """
    Twisted's telnet layer, dropping an unknown command byte instead of the
    connection, and writing what the terminal wrote (which ends its lines with
    CR LF already) with only IAC doubled.  A client that sends more than
    `MAX_PRE_LOGIN_BYTES` before it has logged in is told and closed, and
    what it sends then is not even parsed.
    """

    pre_login_bytes = 0
    flooded = False

    def write(self, data: bytes) -> None:
        self.transport.write(data.replace(telnet.IAC, telnet.IAC + telnet.IAC))

    def _logged_in(self) -> bool:
        terminal = getattr(self.protocol, "terminal", None)
        return getattr(getattr(terminal, "terminalProtocol", None), "session", None) is not None

    def dataReceived(self, data: bytes) -> None:
        if self.flooded:
            return
        if not self._logged_in():
            self.pre_login_bytes += len(data)
            if self.pre_login_bytes > MAX_PRE_LOGIN_BYTES:
                self.flooded = True
                peer = self.transport.getPeer()
                log.warn("Console: {peer} sent more than {limit} bytes before logging in; closed",
                         peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}", limit=MAX_PRE_LOGIN_BYTES)
                self.transport.write(b"\r\nToo much input before login; closing.\r\n")
                self.transport.loseConnection()
                return
        try:
            super().dataReceived(data)
        except ValueError:
            log.debug("Console: a malformed telnet command was ignored")
            self.state = "data"


class TelnetBootstrap(telnet.TelnetProtocol, telnet.ProtocolTransportMixin):
    """
    Negotiates the options of a terminal session (the server echoes, no
    go-aheads, the window size) and carries the data to the terminal.  A
    client that never agrees to the server's echo gets the plain-line session.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.terminal: ConsoleTerminal | None = None

    def connectionMade(self) -> None:
        self.transport.negotiationMap[telnet.NAWS] = self.telnet_NAWS
        self.transport.will(telnet.ECHO).addCallbacks(lambda _: self._echo(True), lambda f: None)
        self.transport.will(telnet.SGA).addErrback(lambda f: None)
        self.transport.do(telnet.NAWS).addErrback(lambda f: None)
        self.terminal = ConsoleTerminal(ConsoleProtocol, self.console)
        self.terminal.makeConnection(self)

    def _echo(self, on: bool) -> None:
        if self.terminal is not None and isinstance(self.terminal.terminalProtocol, ConsoleProtocol):
            self.terminal.terminalProtocol.set_interactive(on)

    def dataReceived(self, data: bytes) -> None:
        if self.terminal is not None:
            self.terminal.dataReceived(data)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def connectionLost(self, reason: Failure) -> None:
        terminal, self.terminal = self.terminal, None
        if terminal is not None:
            terminal.connectionLost(reason)

    def enableLocal(self, option: bytes) -> bool:
        if option == telnet.ECHO:
            self._echo(True)
        return option in (telnet.ECHO, telnet.SGA)

    def disableLocal(self, option: bytes) -> None:
        if option == telnet.ECHO:
            self._echo(False)

    def enableRemote(self, option: bytes) -> bool:
        return option in (telnet.NAWS, telnet.SGA)

    def disableRemote(self, option: bytes) -> None:
        pass

    def telnet_NAWS(self, data: list[bytes]) -> None:
        if len(data) == 4 and self.terminal is not None and self.terminal.terminalProtocol is not None:
            raw = b"".join(data)
            self.terminal.terminalProtocol.terminalSize(int.from_bytes(raw[:2], "big"),
                                                        int.from_bytes(raw[2:], "big"))


class TelnetConsoleFactory(ServerFactory):
    """Builds the telnet stack of one console connection."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def buildProtocol(self, addr: Any) -> TelnetTransport:
        protocol = TelnetTransport(TelnetBootstrap, self.console)
        protocol.factory = self
        return protocol
