# -*- test-case-name: tests.test_tunnel_rfc2217 -*-
"""
RFC 2217 (Telnet COM-PORT-OPTION) on a tunnel: the head-end drives the line.

With ``rfc2217 = true`` an accept-mode client speaks Telnet to the tunnel,
as pyserial's ``rfc2217://host:port`` does: the option negotiation is
`twisted.conch.telnet.Telnet`'s, the COM-PORT-OPTION subnegotiation uses
pyserial's constants (`serial.rfc2217`), and the data stream is binary with
IAC (0xFF) doubled both ways.

What a client may set
    The baud rate, to one of the M-Bus rates (300 ... 38400).  It changes
    the line's setting ``line.N.baud_rate`` through the gateway's action
    (``GatewayService.set_baud_rate``, handed to the factory at
    construction as ``change_baud``): the configuration store validates and saves it
    and the line follows at once, exactly as a change on the M-Bus Serial
    page does, so the web pages, the console, the API and the next start all
    show the rate the head-end chose.  An M-Bus line is 8 data bits, even
    parity, 1 stop bit: the client may ask for those (or ask what they are);
    anything else is refused.  RFC 2217 refuses by answering with the value
    in force, which pyserial reports as "remote rejected value".
    DTR/RTS and flow-control requests are answered (no flow control; the
    M-Bus level converter has no modem lines), a purge is acknowledged, and
    FLOWCONTROL-SUSPEND/RESUME pause and resume the line's bytes to the client.

What a client may read
    The line state (data ready, the kernel's framing, parity, overrun and
    break counters since the last report, transmitter empty) and the modem
    state (CD, DSR and CTS on while the line is open), on request and once
    when COM-PORT-OPTION is agreed.

Telnet's NVT rules are for text: Twisted's parser turns CR LF into LF and
CR NUL into CR.  RFC 2217 data is binary, so a CR in the data is handed to
the line as it is: the input is cut at each CR and, where the parser says it
is between data bytes, the CR is passed on directly (no second parser).
"""

from __future__ import annotations

import struct
from typing import Any

from serial import rfc2217 as R
from twisted.conch import telnet
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.stats import LINE_OPEN
from cmegw.tunnel.base import TunnelProtocol

log = Logger(namespace="cmegw.tunnel")

IAC = telnet.IAC
DOUBLE_IAC = IAC + IAC
COM_PORT_OPTION = R.COM_PORT_OPTION
DATA_BITS = 8
PARITY = R.RFC2217_PARITY_MAP["E"]
STOP_BITS = R.RFC2217_STOPBIT_MAP[1]

#: Options the gateway agrees to: binary both ways, suppress-go-ahead, COM-PORT-OPTION.
ACCEPTED_OPTIONS = (R.BINARY, R.SGA, COM_PORT_OPTION)

_FLOW_ANSWERS = {
    # asked or set (outbound/both) -> "no flow control"; the same for inbound
    ord(R.SET_CONTROL_REQ_FLOW_SETTING): R.SET_CONTROL_USE_NO_FLOW_CONTROL,
    ord(R.SET_CONTROL_USE_NO_FLOW_CONTROL): R.SET_CONTROL_USE_NO_FLOW_CONTROL,
    ord(R.SET_CONTROL_USE_SW_FLOW_CONTROL): R.SET_CONTROL_USE_NO_FLOW_CONTROL,
    ord(R.SET_CONTROL_USE_HW_FLOW_CONTROL): R.SET_CONTROL_USE_NO_FLOW_CONTROL,
    ord(R.SET_CONTROL_USE_DCD_FLOW_CONTROL): R.SET_CONTROL_USE_NO_FLOW_CONTROL,
    ord(R.SET_CONTROL_USE_DSR_FLOW_CONTROL): R.SET_CONTROL_USE_NO_FLOW_CONTROL,
    ord(R.SET_CONTROL_REQ_FLOW_SETTING_IN): R.SET_CONTROL_USE_NO_FLOW_CONTROL_IN,
    ord(R.SET_CONTROL_USE_NO_FLOW_CONTROL_IN): R.SET_CONTROL_USE_NO_FLOW_CONTROL_IN,
    ord(R.SET_CONTROL_USE_SW_FLOW_CONTOL_IN): R.SET_CONTROL_USE_NO_FLOW_CONTROL_IN,
    ord(R.SET_CONTROL_USE_HW_FLOW_CONTOL_IN): R.SET_CONTROL_USE_NO_FLOW_CONTROL_IN,
    ord(R.SET_CONTROL_USE_DTR_FLOW_CONTROL): R.SET_CONTROL_USE_NO_FLOW_CONTROL_IN,
    # break: asked, or set on/off -> off (the tunnel sends no break)
    ord(R.SET_CONTROL_REQ_BREAK_STATE): R.SET_CONTROL_BREAK_OFF,
    ord(R.SET_CONTROL_BREAK_ON): R.SET_CONTROL_BREAK_OFF,
    ord(R.SET_CONTROL_BREAK_OFF): R.SET_CONTROL_BREAK_OFF,
    # DTR and RTS: asked -> on; set -> acknowledged as set
    ord(R.SET_CONTROL_REQ_DTR): R.SET_CONTROL_DTR_ON,
    ord(R.SET_CONTROL_DTR_ON): R.SET_CONTROL_DTR_ON,
    ord(R.SET_CONTROL_DTR_OFF): R.SET_CONTROL_DTR_OFF,
    ord(R.SET_CONTROL_REQ_RTS): R.SET_CONTROL_RTS_ON,
    ord(R.SET_CONTROL_RTS_ON): R.SET_CONTROL_RTS_ON,
    ord(R.SET_CONTROL_RTS_OFF): R.SET_CONTROL_RTS_OFF,
}

#: Line-state bits from the kernel's counters of the line (LineStatistics attribute -> bit).
_ERROR_BITS = (
    ("framing_errors", R.LINESTATE_MASK_FRAMING_ERROR),
    ("parity_errors", R.LINESTATE_MASK_PARTIY_ERROR),
    ("overrun_errors", R.LINESTATE_MASK_OVERRUN_ERROR),
    ("rx_breaks", R.LINESTATE_MASK_BREAK_DETECT),
)


def escape(data: bytes) -> bytes:
    """Data for the Telnet stream: each IAC doubled."""
    return data.replace(IAC, DOUBLE_IAC)


def _fixed_setting(command: bytes, fixed: int, what: str) -> Any:
    """The handler of a setting an M-Bus line cannot change (8E1): asked or the same, fine; else refused."""

    def handle(protocol: "Rfc2217Protocol", value: bytes) -> None:
        if value and value[0] not in (0, fixed):
            log.info("Tunnel {n}: {peer} asked for {what} {v}: refused (an M-Bus line is 8E1)",
                     n=protocol.factory.number, peer=protocol.peer, what=what, v=value[0])
        protocol._reply(command, bytes([fixed]))

    return handle


class Rfc2217Protocol(TunnelProtocol, telnet.Telnet):
    """An accept-mode client speaking RFC 2217 (see the module docstring)."""

    def __init__(self) -> None:
        telnet.Telnet.__init__(self)
        self.negotiationMap[COM_PORT_OPTION] = self._com_port
        self.linestate_mask = 0xFF
        self.modemstate_mask = 0xFF
        self.suspended = False
        self._error_counts: dict[str, int] = {}
        self._lost = False

    # -- the tunnel --------------------------------------------------------------------

    def connectionMade(self) -> None:
        TunnelProtocol.connectionMade(self)
        # Binary both ways (RFC 2217 asks for it); Telnet negotiates one direction of an option at a time.
        self.will(R.BINARY).addBoth(self._binary_from_client)

    def _binary_from_client(self, result: Any) -> None:
        if not self._lost:
            self.do(R.BINARY).addErrback(_ignore)

    def dataReceived(self, data: bytes) -> None:
        """Telnet's parser, with binary CRs passed on as data (see the module docstring)."""
        parse = telnet.Telnet.dataReceived
        start = 0
        while True:
            cr = data.find(b"\r", start)
            if cr < 0:
                break
            if cr > start:
                parse(self, data[start:cr])
            if self.state == "data":
                self.applicationDataReceived(b"\r")
            else:
                parse(self, b"\r")
            start = cr + 1
        if start < len(data):
            parse(self, data[start:])

    def applicationDataReceived(self, data: bytes) -> None:
        TunnelProtocol.dataReceived(self, data)

    def line_data(self, data: bytes) -> None:
        factory = self.factory
        factory.stats.octets_from_serial += len(data)
        self.last_activity = factory.clock.seconds()
        self.write(escape(data))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = True
        if self.suspended:
            self._resume(b"")
        TunnelProtocol.connectionLost(self, reason)
        telnet.Telnet.connectionLost(self, reason)

    # -- Telnet options ---------------------------------------------------------------

    def enableLocal(self, option: bytes) -> bool:
        if option == COM_PORT_OPTION:
            self.factory.clock.callLater(0, self._announce)
        return option in ACCEPTED_OPTIONS

    def enableRemote(self, option: bytes) -> bool:
        return option in ACCEPTED_OPTIONS

    def disableLocal(self, option: bytes) -> None:
        pass

    def disableRemote(self, option: bytes) -> None:
        pass

    def _announce(self) -> None:
        if self.transport is not None and not self.transport.disconnecting:
            self._notify_modemstate()
            self._notify_linestate()

    # -- COM-PORT-OPTION ------------------------------------------------------------------

    def _reply(self, command: bytes, value: bytes) -> None:
        self.requestNegotiation(COM_PORT_OPTION, R.RFC2217_ANSWER_MAP[command] + value)

    def _com_port(self, data: list[bytes]) -> None:
        if not data:
            return
        command, value = data[0], b"".join(data[1:])
        handler = self._commands.get(command)
        if handler is None:
            log.debug("Tunnel {n}: RFC 2217 command {c!r} ignored", n=self.factory.number, c=command)
            return
        handler(self, value)

    def _set_baudrate(self, value: bytes) -> None:
        line = self.factory.line
        if len(value) == 4:
            (wanted,) = struct.unpack("!I", value)
            current = line.config.baud_rate
            if wanted and wanted != current:
                problem = self._change_baud(wanted)
                if problem:
                    log.info("Tunnel {n}: {peer} asked for {baud} baud: refused ({why})", n=self.factory.number,
                             peer=self.peer, baud=wanted, why=problem)
                else:
                    log.info("Tunnel {n}: {peer} set line {n} to {baud} baud (RFC 2217)", n=self.factory.number,
                             peer=self.peer, baud=wanted)
        self._reply(R.SET_BAUDRATE, struct.pack("!I", line.config.baud_rate))

    def _change_baud(self, baud: int) -> str | None:
        """The gateway's action sets (and validates) the rate; its error text is the refusal's reason."""
        change = self.factory.change_baud
        if change is None:
            return "this tunnel cannot change its line"
        return change(baud)

    def _set_control(self, value: bytes) -> None:
        if not value:
            return
        answer = _FLOW_ANSWERS.get(value[0])
        if answer is not None:
            self._reply(R.SET_CONTROL, answer)

    def _notify_linestate(self, value: bytes = b"") -> None:
        self._reply(R.NOTIFY_LINESTATE, bytes([self.linestate() & self.linestate_mask]))

    def _notify_modemstate(self, value: bytes = b"") -> None:
        self._reply(R.NOTIFY_MODEMSTATE, bytes([self.modemstate() & self.modemstate_mask]))

    def _suspend(self, value: bytes) -> None:
        if not self.suspended:
            self.suspended = True
            self.factory.line.pauseProducing()

    def _resume(self, value: bytes) -> None:
        if self.suspended:
            self.suspended = False
            self.factory.line.resumeProducing()

    def _set_linestate_mask(self, value: bytes) -> None:
        self.linestate_mask = value[0] if value else 0xFF
        self._reply(R.SET_LINESTATE_MASK, bytes([self.linestate_mask]))

    def _set_modemstate_mask(self, value: bytes) -> None:
        self.modemstate_mask = value[0] if value else 0xFF
        self._reply(R.SET_MODEMSTATE_MASK, bytes([self.modemstate_mask]))

    def _purge(self, value: bytes) -> None:
        self._reply(R.PURGE_DATA, value[:1] or R.PURGE_BOTH_BUFFERS)

    _commands = {
        R.SET_BAUDRATE: _set_baudrate,
        R.SET_DATASIZE: _fixed_setting(R.SET_DATASIZE, DATA_BITS, "data bits"),
        R.SET_PARITY: _fixed_setting(R.SET_PARITY, PARITY, "parity"),
        R.SET_STOPSIZE: _fixed_setting(R.SET_STOPSIZE, STOP_BITS, "stop bits"),
        R.SET_CONTROL: _set_control,
        R.NOTIFY_LINESTATE: _notify_linestate,
        R.NOTIFY_MODEMSTATE: _notify_modemstate,
        R.FLOWCONTROL_SUSPEND: _suspend,
        R.FLOWCONTROL_RESUME: _resume,
        R.SET_LINESTATE_MASK: _set_linestate_mask,
        R.SET_MODEMSTATE_MASK: _set_modemstate_mask,
        R.PURGE_DATA: _purge,
    }

    # -- the line's state ------------------------------------------------------------------

    def linestate(self) -> int:
        """RFC 2217 line state: errors counted since the last report, transmitter empty, data waiting."""
        stats = self.factory.line.stats
        state = 0
        for attribute, bit in _ERROR_BITS:
            count = getattr(stats, attribute, None)
            if count is None:
                continue
            if count > self._error_counts.get(attribute, 0):
                state |= bit
            self._error_counts[attribute] = count
        if not getattr(stats, "queued_tx", None):
            state |= R.LINESTATE_MASK_TRANSREG_EMPTY | R.LINESTATE_MASK_SHIFTREG_EMPTY
        if getattr(stats, "queued_rx", None):
            state |= R.LINESTATE_MASK_DATA_READY
        return state

    def modemstate(self) -> int:
        """CD, DSR and CTS while the line is open (an M-Bus adapter has no modem lines to read)."""
        if getattr(self.factory.line.stats, "state", LINE_OPEN) != LINE_OPEN:
            return 0
        return R.MODEMSTATE_MASK_CD | R.MODEMSTATE_MASK_DSR | R.MODEMSTATE_MASK_CTS


def _ignore(failure: Failure) -> None:
    """A refused or interrupted option negotiation needs nothing more."""
