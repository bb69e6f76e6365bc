"""Tests for cmegw.tunnel.rfc2217: the Telnet COM-PORT-OPTION tunnel, with StringTransport."""

import struct

from serial import rfc2217 as R
from twisted.internet import error, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from cmegw.config.model import BAUD_RATES, LineConfig, TunnelConfig
from cmegw.stats import LINE_ERROR, TunnelStatistics
from cmegw.testing import FakeLine
from cmegw.tunnel.accept import TunnelFactory
from cmegw.tunnel.base import TunnelProtocol
from cmegw.tunnel.rfc2217 import Rfc2217Protocol, escape

IAC, SB, SE = R.IAC, R.SB, R.SE


def sb(command, value=b""):
    """A COM-PORT-OPTION subnegotiation as a client sends it (IAC in the value doubled)."""
    return IAC + SB + R.COM_PORT_OPTION + command + value.replace(IAC, IAC + IAC) + IAC + SE


def answer(command, value):
    return IAC + SB + R.COM_PORT_OPTION + R.RFC2217_ANSWER_MAP[command] + value + IAC + SE


class Rfc2217Tests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.line = FakeLine()
        self.stats = TunnelStatistics()
        self.changes = []
        self.refusal = None
        self.factory = TunnelFactory(1, TunnelConfig(rfc2217=True), self.line, self.clock, self.stats,
                                     change_baud=self.change_baud)
        address = IPv4Address("TCP", "127.0.0.1", 40001)
        self.protocol = self.factory.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        self.protocol.makeConnection(self.transport)

    def change_baud(self, baud):
        """What the gateway's action does: the store validates the rate, saves it, and the line follows."""
        if self.refusal is not None:
            return self.refusal
        try:
            config = LineConfig(baud_rate=baud)
        except ValueError as e:
            return str(e)
        self.changes.append(baud)
        self.line.apply(config)
        return None

    def sent(self):
        value = self.transport.value()
        self.transport.clear()
        return value

    def test_protocol_chosen_by_the_option(self):
        self.assertIsInstance(self.protocol, Rfc2217Protocol)
        plain = TunnelFactory(2, TunnelConfig(), FakeLine(), self.clock)
        self.assertIs(plain.protocol, TunnelProtocol, "with the option off the tunnel stays 8-bit transparent")

    def test_asks_for_binary_both_ways(self):
        self.assertEqual(self.sent(), IAC + R.WILL + R.BINARY)
        self.protocol.dataReceived(IAC + R.DO + R.BINARY)
        self.assertEqual(self.sent(), IAC + R.DO + R.BINARY, "then the other direction")
        self.protocol.dataReceived(IAC + R.WILL + R.BINARY)
        self.assertEqual(self.sent(), b"", "agreed without another word")

    def test_pyserial_negotiation(self):
        self.sent()
        self.protocol.dataReceived(IAC + R.DO + R.ECHO + IAC + R.WILL + R.SGA + IAC + R.DO + R.SGA
                                   + IAC + R.WILL + R.COM_PORT_OPTION + IAC + R.DO + R.COM_PORT_OPTION)
        out = self.sent()
        self.assertIn(IAC + R.WONT + R.ECHO, out, "the gateway does not echo")
        self.assertIn(IAC + R.DO + R.SGA, out)
        self.assertIn(IAC + R.WILL + R.SGA, out)
        self.assertIn(IAC + R.DO + R.COM_PORT_OPTION, out)
        self.assertIn(IAC + R.WILL + R.COM_PORT_OPTION, out)
        self.clock.advance(0)
        out = self.sent()
        modem = R.MODEMSTATE_MASK_CD | R.MODEMSTATE_MASK_DSR | R.MODEMSTATE_MASK_CTS
        self.assertIn(answer(R.NOTIFY_MODEMSTATE, bytes([modem])), out, "the modem state is announced")
        self.assertIn(IAC + SB + R.COM_PORT_OPTION + R.SERVER_NOTIFY_LINESTATE, out)

    def test_iac_escaped_from_the_line(self):
        self.sent()
        self.line.feed(b"\xff\x68\xff\xff\x16")
        self.assertEqual(self.sent(), b"\xff\xff\x68\xff\xff\xff\xff\x16")
        self.assertEqual(self.stats.octets_from_serial, 5, "the line's bytes are counted, not the escapes")
        self.assertEqual(escape(b"a\xffb"), b"a\xff\xffb")

    def test_iac_unescaped_to_the_line(self):
        self.protocol.dataReceived(b"\x68\xff\xff\x01\xff")
        self.protocol.dataReceived(b"\xff\x16")
        self.assertEqual(bytes(self.line.written), b"\x68\xff\x01\xff\x16")
        self.assertEqual(self.stats.octets_from_network, 5)

    def test_carriage_returns_are_data(self):
        frame = b"\x68\x0d\x0d\x68\x0d\x0a\x0d\x00\x0d\xff\xff\x0d"
        self.protocol.dataReceived(frame)
        self.protocol.dataReceived(b"\x0d")
        self.protocol.dataReceived(b"\x0a\x16")
        self.assertEqual(bytes(self.line.written), b"\x68\x0d\x0d\x68\x0d\x0a\x0d\x00\x0d\xff\x0d\x0d\x0a\x16",
                         "CR LF and CR NUL reach the line as they were sent (binary mode)")

    def test_commands_between_data(self):
        self.sent()
        self.protocol.dataReceived(b"\x10\x0d" + sb(R.SET_DATASIZE, b"\x08") + b"\x0d\x16")
        self.assertEqual(bytes(self.line.written), b"\x10\x0d\x0d\x16")
        self.assertEqual(self.sent(), answer(R.SET_DATASIZE, b"\x08"))

    def test_set_baud_rate(self):
        self.sent()
        self.protocol.dataReceived(sb(R.SET_BAUDRATE, struct.pack("!I", 300)))
        self.assertEqual(self.changes, [300])
        self.assertEqual(self.sent(), answer(R.SET_BAUDRATE, struct.pack("!I", 300)))

    def test_every_mbus_rate_and_no_other(self):
        for baud in BAUD_RATES:
            self.protocol.dataReceived(sb(R.SET_BAUDRATE, struct.pack("!I", baud)))
        self.assertEqual(self.changes, list(BAUD_RATES))
        self.sent()
        for baud in (110, 57600, 115200):
            self.protocol.dataReceived(sb(R.SET_BAUDRATE, struct.pack("!I", baud)))
            self.assertEqual(self.sent(), answer(R.SET_BAUDRATE, struct.pack("!I", 38400)),
                             "refused: the answer is the rate in force")
        self.assertEqual(len(self.changes), len(BAUD_RATES))

    def test_query_baud_rate(self):
        self.sent()
        self.protocol.dataReceived(sb(R.SET_BAUDRATE, struct.pack("!I", 0)))
        self.assertEqual(self.sent(), answer(R.SET_BAUDRATE, struct.pack("!I", 2400)))
        self.assertEqual(self.changes, [])

    def test_store_refusal_keeps_the_rate(self):
        self.refusal = "the configuration could not be saved"
        self.sent()
        self.protocol.dataReceived(sb(R.SET_BAUDRATE, struct.pack("!I", 300)))
        self.assertEqual(self.sent(), answer(R.SET_BAUDRATE, struct.pack("!I", 2400)))

    def test_data_bits_parity_stop_bits_are_8e1(self):
        self.sent()
        cases = [
            (R.SET_DATASIZE, 8, 8), (R.SET_DATASIZE, 7, 8), (R.SET_DATASIZE, 0, 8),
            (R.SET_PARITY, R.RFC2217_PARITY_MAP["E"], 3), (R.SET_PARITY, R.RFC2217_PARITY_MAP["N"], 3),
            (R.SET_PARITY, 0, 3),
            (R.SET_STOPSIZE, 1, 1), (R.SET_STOPSIZE, 2, 1), (R.SET_STOPSIZE, 0, 1),
        ]
        for command, asked, answered in cases:
            self.protocol.dataReceived(sb(command, bytes([asked])))
            self.assertEqual(self.sent(), answer(command, bytes([answered])), (command, asked))

    def test_set_control(self):
        self.sent()
        cases = [
            (R.SET_CONTROL_DTR_ON, R.SET_CONTROL_DTR_ON), (R.SET_CONTROL_DTR_OFF, R.SET_CONTROL_DTR_OFF),
            (R.SET_CONTROL_RTS_ON, R.SET_CONTROL_RTS_ON), (R.SET_CONTROL_REQ_DTR, R.SET_CONTROL_DTR_ON),
            (R.SET_CONTROL_USE_NO_FLOW_CONTROL, R.SET_CONTROL_USE_NO_FLOW_CONTROL),
            (R.SET_CONTROL_USE_HW_FLOW_CONTROL, R.SET_CONTROL_USE_NO_FLOW_CONTROL),
            (R.SET_CONTROL_REQ_FLOW_SETTING, R.SET_CONTROL_USE_NO_FLOW_CONTROL),
            (R.SET_CONTROL_REQ_FLOW_SETTING_IN, R.SET_CONTROL_USE_NO_FLOW_CONTROL_IN),
            (R.SET_CONTROL_BREAK_ON, R.SET_CONTROL_BREAK_OFF),
        ]
        for asked, answered in cases:
            self.protocol.dataReceived(sb(R.SET_CONTROL, asked))
            self.assertEqual(self.sent(), answer(R.SET_CONTROL, answered), asked)

    def test_line_and_modem_state(self):
        self.sent()
        self.line.stats.queued_tx = 0
        self.line.stats.framing_errors = 0
        self.protocol.dataReceived(sb(R.NOTIFY_LINESTATE))
        empty = R.LINESTATE_MASK_TRANSREG_EMPTY | R.LINESTATE_MASK_SHIFTREG_EMPTY
        self.assertEqual(self.sent(), answer(R.NOTIFY_LINESTATE, bytes([empty])))
        self.line.stats.framing_errors = 2
        self.line.stats.queued_tx = 5
        self.protocol.dataReceived(sb(R.NOTIFY_LINESTATE))
        self.assertEqual(self.sent(), answer(R.NOTIFY_LINESTATE, bytes([R.LINESTATE_MASK_FRAMING_ERROR])))
        self.protocol.dataReceived(sb(R.NOTIFY_LINESTATE))
        self.assertEqual(self.sent(), answer(R.NOTIFY_LINESTATE, b"\x00"), "an error is reported once")
        self.protocol.dataReceived(sb(R.SET_LINESTATE_MASK, b"\x0f"))
        self.assertEqual(self.sent(), answer(R.SET_LINESTATE_MASK, b"\x0f"))
        self.protocol.dataReceived(sb(R.NOTIFY_MODEMSTATE))
        self.assertEqual(self.sent(), answer(R.NOTIFY_MODEMSTATE, b"\xb0"))
        self.line.stats.state = LINE_ERROR
        self.protocol.dataReceived(sb(R.NOTIFY_MODEMSTATE))
        self.assertEqual(self.sent(), answer(R.NOTIFY_MODEMSTATE, b"\x00"), "no carrier while the line is down")
        self.protocol.dataReceived(sb(R.SET_MODEMSTATE_MASK, b"\x80"))
        self.assertEqual(self.sent(), answer(R.SET_MODEMSTATE_MASK, b"\x80"))

    def test_flow_control_suspend_resume(self):
        self.protocol.dataReceived(sb(R.FLOWCONTROL_SUSPEND))
        self.assertTrue(self.line.paused)
        self.protocol.dataReceived(sb(R.FLOWCONTROL_RESUME))
        self.assertFalse(self.line.paused)

    def test_purge(self):
        self.sent()
        self.protocol.dataReceived(sb(R.PURGE_DATA, R.PURGE_BOTH_BUFFERS))
        self.assertEqual(self.sent(), answer(R.PURGE_DATA, R.PURGE_BOTH_BUFFERS))

    def test_unknown_command_ignored(self):
        self.sent()
        self.protocol.dataReceived(sb(b"\x55", b"\x01") + b"\x16")
        self.assertEqual(self.sent(), b"")
        self.assertEqual(bytes(self.line.written), b"\x16")

    def test_disconnect_timeout_and_close(self):
        self.clock.advance(10)
        self.assertTrue(self.transport.disconnecting)
        self.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertIsNone(self.factory.client)
