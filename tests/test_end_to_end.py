"""
The whole gateway as a user runs it: a real ``twistd cmegw`` process, real
ptys, real loopback sockets, and pyMeterBus as the head-end over socket://.
"""

import os
import socket
from pathlib import Path

from twisted.internet import reactor, task, threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from cmegw.mbus.meterbus import MeterBus, default_meters
from cmegw.mbus.simulator import SimulatedBus
from tests.support import GatewayProcess, defaults_with, free_port, open_pty, read_fd, read_hex, read_socket, real_frames

try:
    import meterbus
    import serial
except ImportError:  # pragma: no cover
    meterbus = None


def require_meterbus():
    if meterbus is None:
        raise SkipTest("pyMeterBus is not installed (the test command installs it)")


def mbus_client(port, timeout=2.0):
    return serial.serial_for_url(f"socket://127.0.0.1:{port}", baudrate=2400, bytesize=8,
                                 parity=serial.PARITY_EVEN, stopbits=1, timeout=timeout)


def read_meter(ser, address):
    """SND_NKE then REQ_UD2, as a head-end does; the decoded RSP_UD or None."""
    meterbus.send_ping_frame(ser, address)
    ack = meterbus.recv_frame(ser, 1)
    if not ack:
        return None
    meterbus.send_request_frame(ser, address)
    data = meterbus.recv_frame(ser, meterbus.FRAME_DATA_LENGTH)
    return meterbus.load(data) if data else None


class SimulatedBusTests(TestCase):
    """``twistd cmegw --simulate``: the README's run command, read by pyMeterBus."""

    def setUp(self):
        require_meterbus()
        self.port = free_port()
        self.gw = GatewayProcess(self.mktemp(), ["--config", "cmegw.toml", "--simulate",
                                                 "--tunnel", f"tcp:{self.port}:interface=127.0.0.1"])
        self.addCleanup(self.gw.stop)
        self.gw.start([self.port])

    def test_reads_every_simulated_meter(self):
        ser = mbus_client(self.port)
        self.addCleanup(ser.close)
        for meter in default_meters():
            frame = read_meter(ser, meter.primary)
            self.assertIsNotNone(frame, f"meter {meter.primary} answered")
            header = frame.body.bodyHeader
            self.assertEqual(header.manufacturer_field.decodeManufacturer, meter.address.manufacturer)
            ident = "".join(f"{b:02X}" for b in header.id_nr)
            self.assertEqual(ident, meter.address.ident)
            more = 1 if len(meter.telegrams) > 1 else 0  # pyMeterBus counts DIF 0x1F as a record
            self.assertEqual(len(frame.records), len(meter.telegrams[0]) + more)
        self.assertIsNone(read_meter(ser, 77), "no meter at 77: silence, not garbage")
        log = self.gw.log()
        self.assertIn("simulated M-Bus", log)
        self.assertIn(f"listening on 127.0.0.1:{self.port}", log)

    def test_config_file_created_and_not_changed_by_options(self):
        text = (self.gw.directory / "cmegw.toml").read_text()
        self.assertIn('listen = "tcp:10001"', text, "command-line values are never saved")
        self.assertIn("simulate = false", text)


class PulledAdapterTests(TestCase):
    """The device goes away during a transaction and comes back: the client reads again."""

    @inlineCallbacks
    def test_recovers(self):
        require_meterbus()
        tmp = Path(self.mktemp()).resolve()
        tmp.mkdir()
        link = str(tmp / "ttyMBUS0")
        bus = SimulatedBus(reactor, MeterBus(default_meters()), reply_delay=0.3)
        bus.start(link=link)
        self.addCleanup(bus.stop)
        (tmp / "cmegw.toml").write_text(defaults_with(("reopen_interval = 3", "reopen_interval = 1"),
                                                      ("disconnect_timeout = 10", "disconnect_timeout = 0")))
        port = free_port()
        gw = GatewayProcess(tmp, ["--config", "cmegw.toml", "--device", link,
                                  "--tunnel", f"tcp:{port}:interface=127.0.0.1"])
        self.addCleanup(gw.stop)
        yield threads.deferToThread(gw.start, [port])
        ser = mbus_client(port, timeout=1.5)
        self.addCleanup(ser.close)
        first = yield threads.deferToThread(read_meter, ser, 1)
        self.assertIsNotNone(first)

        def request():
            meterbus.send_request_frame(ser, 1)
            return meterbus.recv_frame(ser, meterbus.FRAME_DATA_LENGTH)

        pending = threads.deferToThread(request)
        yield task.deferLater(reactor, 0.1, bus.unplug)  # mid-transaction: before the 0.3 s reply
        lost = yield pending
        self.assertFalse(lost, "no answer from a pulled adapter")
        yield threads.deferToThread(gw.wait_log, lambda log: "went away" in log, "the line going away", 5.0)
        self.assertIn("went away", gw.log())
        bus.replug()
        yield threads.deferToThread(gw.wait_log, lambda log: "is back" in log, "the line coming back", 5.0)
        self.assertIn("is back", gw.log())
        again = yield threads.deferToThread(read_meter, ser, 2)
        self.assertIsNotNone(again, "the same client reads again on the same connection")


class RealFramesTests(TestCase):
    """Real meter frames cross the tunnel byte-identical, both ways."""

    def test_byte_identical(self):
        frames = real_frames("test-frames") + real_frames("error-frames")
        master, slave, path = open_pty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        port = free_port()
        gw = GatewayProcess(self.mktemp(), ["--config", "cmegw.toml", "--device", path,
                                            "--tunnel", f"tcp:{port}:interface=127.0.0.1"])
        self.addCleanup(gw.stop)
        gw.start([port])
        client = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(client.close)
        # The line's bytes reach the client once the tunnel has it (before, they are discarded).
        gw.wait_log(lambda log: f"127.0.0.1:{client.getsockname()[1]} connected" in log, "the client connected")
        for path in frames:
            data = read_hex(path)
            os.write(master, data)
            self.assertEqual(read_socket(client, size=len(data)), data, f"{path.name} line->network")
            client.sendall(data)
            self.assertEqual(read_fd(master, len(data)), data, f"{path.name} network->line")
        self.assertGreater(len(frames), 50)
