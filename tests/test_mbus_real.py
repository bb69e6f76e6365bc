"""
The master and tunnel sharing as a user runs them: a real ``twistd cmegw
--simulate`` process, pyMeterBus head-ends over socket:// on loopback, the
console over a plain socket.  Every loop is bounded; no timing is asserted.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from cmegw.config.store import factory_defaults_text
from cmegw.mbus import frames
from cmegw.mbus.address import SecondaryAddress
from cmegw.mbus.meterbus import default_meters
from tests.support import GatewayProcess, free_port

try:
    import meterbus
    import serial
except ImportError:  # pragma: no cover
    meterbus = None

LOOPBACK_WEB = ("--http", "tcp:0:interface=127.0.0.1", "--https", "tcp:0:interface=127.0.0.1")
#: Rounds each sharing client reads every meter.
ROUNDS = 5
CLIENTS = 4
#: Rounds of the four sharing clients: at wire time each takes about 10 s of bus.
SHARED_ROUNDS = 2


def require_meterbus() -> None:
    if meterbus is None:
        raise SkipTest("pyMeterBus is not installed (the test command installs it)")


def mbus_client(port: int, timeout: float = 3.0) -> Any:
    return serial.serial_for_url(f"socket://127.0.0.1:{port}", baudrate=2400, bytesize=8,
                                 parity=serial.PARITY_EVEN, stopbits=1, timeout=timeout)


def read_meter(ser: Any, address: int) -> tuple[bytes | None, bytes | None]:
    """SND_NKE then REQ_UD2 with pyMeterBus, reading byte by byte (returns as soon as a frame is whole)."""
    meterbus.send_ping_frame(ser, address)
    ack = meterbus.recv_frame(ser, 1)
    if not ack:
        return None, None
    meterbus.send_request_frame(ser, address)
    return bytes(ack), bytes(meterbus.recv_frame(ser, 1) or b"")


def check_reply(address: int, ack: bytes | None, data: bytes | None) -> str | None:
    """Why the exchange with meter `address` is wrong, or None: right meter, clean frames."""
    expected = {m.primary: m.address for m in default_meters()}[address]
    if ack != frames.ACK:
        return f"{address}: SND_NKE answered {ack!r}"
    try:
        frame = frames.parse_frame(data or b"")
    except frames.FrameError as e:
        return f"{address}: RSP_UD corrupted: {e}"
    if frame.a != address or SecondaryAddress.from_bytes(frame.data[:8]) != expected:
        return f"{address}: got the answer of meter {frame.a} ({SecondaryAddress.from_bytes(frame.data[:8])})"
    telegram = meterbus.load(data)
    ident = "".join(f"{b:02X}" for b in telegram.body.bodyHeader.id_nr)
    if ident != expected.ident:
        return f"{address}: pyMeterBus reads ident {ident}"
    return None


def console(port: int, steps: list[tuple[str, bytes]], limit: float = 60.0) -> str:
    """
    Log in to the console with the factory user, then for each (line, until)
    send the line and read until `until` appears (each step bounded by `limit`).
    """
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:

        def read_until(mark: bytes, start: int) -> None:
            nonlocal data
            deadline = time.monotonic() + limit
            while mark not in data[start:] and time.monotonic() < deadline:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    return
                if not chunk:
                    return
                data += chunk

        sock.sendall(b"admin\nadmin\n")
        read_until(b"Logged in as admin", 0)
        for line, until in steps:
            start = len(data)
            sock.sendall(line.encode() + b"\n")
            read_until(until, start)
        try:
            sock.sendall(b"exit\n")
        except OSError:
            pass
    return data.decode("utf-8", "replace")


class GatewayTestCase(TestCase):
    #: Replacements in the factory defaults (which hold the console's admin user).
    changes: dict[str, str] = {"disconnect_timeout = 10": "disconnect_timeout = 0"}

    def setUp(self) -> None:
        require_meterbus()
        self.port, self.console_port = free_port(), free_port()
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        text = factory_defaults_text()
        for old, new in self.changes.items():
            assert old in text, old
            text = text.replace(old, new)
        (directory / "cmegw.toml").write_text(text)
        self.gw = GatewayProcess(directory, [
            "--config", "cmegw.toml", "--simulate", "--tunnel", f"tcp:{self.port}:interface=127.0.0.1",
            "--console", f"tcp:{self.console_port}:interface=127.0.0.1", *LOOPBACK_WEB])
        self.addCleanup(self.gw.stop)
        self.gw.start([self.port, self.console_port])


class SharingTests(GatewayTestCase):
    changes = {**GatewayTestCase.changes, "sharing = false": "sharing = true"}

    def test_four_clients_each_get_their_own_replies(self) -> None:
        addresses = [m.primary for m in default_meters()]
        start = threading.Barrier(CLIENTS, timeout=10)

        def client(index: int) -> tuple[list[str], int]:
            # The simulated bus keeps wire time: a client may wait for the three others' reads
            # (about 0.7 s each at 2400 baud) before its own, beyond pyMeterBus's usual 3 s.
            ser = mbus_client(self.port, timeout=4 * CLIENTS)
            try:
                start.wait()
                problems, exchanges = [], 0
                for round_ in range(SHARED_ROUNDS):
                    for offset in range(len(addresses)):
                        address = addresses[(index + offset + round_) % len(addresses)]
                        ack, data = read_meter(ser, address)
                        exchanges += 2
                        problem = check_reply(address, ack, data)
                        if problem:
                            problems.append(f"client {index}: {problem}")
                return problems, exchanges
            finally:
                ser.close()

        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS), timeout=120))
        took = time.monotonic() - began
        problems = [p for found, _ in results for p in found]
        self.assertEqual(problems, [])
        exchanges = sum(n for _, n in results)
        self.assertEqual(exchanges, CLIENTS * SHARED_ROUNDS * len(addresses) * 2)
        self.assertIsNone(self.gw.process.poll())
        log = self.gw.log()
        self.assertEqual(log.count("connected (sharing"), CLIENTS)
        self.assertNotIn("Traceback", log)
        # The figure for the note (not asserted): transactions per second on the simulated bus.
        self.transactions_per_second = exchanges / took

    def test_malformed_frames_get_no_bus_time(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"\x10\x40\x01\x42\x16" + b"garbage")  # a bad checksum, then junk
            sock.sendall(frames.snd_nke(1))
            sock.settimeout(3)
            self.assertEqual(sock.recv(16), frames.ACK, "the good frame after them is answered")
        text = console(self.console_port, [("mbus", b"waiting")])
        self.assertRegex(text, r"Line 1: 1 transactions \(1 answered")


class MasterTests(GatewayTestCase):

    def test_console_scan_and_read(self) -> None:
        text = console(self.console_port, [("mbus scan secondary", b"Secondary scan of line 1 "),
                                           ("mbus read 10", b"records")],
                       limit=90)
        self.assertIn("Secondary scan of line 1 done: 4 meters", text)
        for meter in default_meters():
            self.assertIn(meter.address.ident, text)
        self.assertIn("(15 records as decoded:", text)
        self.assertIn("Volume                3 214.56 m³", text)

    def test_scan_interleaves_with_a_transparent_client(self) -> None:
        """A head-end polling through the transparent tunnel while the master scans: both get through."""
        ser = mbus_client(self.port)
        self.addCleanup(ser.close)
        problems: list[str] = []
        stop = threading.Event()
        reads = [0]

        def poll() -> None:
            addresses = [m.primary for m in default_meters()]
            for i in range(200):
                if stop.is_set():
                    return
                address = addresses[i % len(addresses)]
                problem = check_reply(address, *read_meter(ser, address))
                reads[0] += 1
                if problem:
                    problems.append(problem)

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            polling = pool.submit(poll)
            text = console(self.console_port, [("mbus scan secondary", b"Secondary scan of line 1 ")], limit=120)
            stop.set()
            polling.result(timeout=60)
        self.assertIn("Secondary scan of line 1 done: 4 meters", text)
        self.assertEqual(problems, [])
        self.assertGreater(reads[0], 4)
