"""Tests for cmegw.console.mbus_commands: the console's mbus commands on a simulated bus and task.Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.trial.unittest import TestCase

from cmegw.console.commands import Reply, Session, commands
from cmegw.mbus.arbiter import BusArbiter
from cmegw.mbus.master import Master
from cmegw.mbus.meterbus import MeterBus, default_meters
from cmegw.state import BusView
from cmegw.testing import BusLine, fake_state, run_clock as run


class Gateway:
    def __init__(self, clock: task.Clock) -> None:
        self.line = BusLine(MeterBus(default_meters()), clock)
        self.arbiter = BusArbiter(1, self.line, clock)
        self.masters = {1: Master(1, self.arbiter, clock)}
        self.reactor = clock
        self.state = fake_state(clock, bus={1: BusView(1, self.masters[1])})

    def start_scan(self, n, kind, identify=True):
        master = self.masters[n]
        return master.scan_primary(identify=identify) if kind == "primary" else master.scan_secondary()

    def read_meter(self, n, address):
        return self.masters[n].read(address)


class MbusCommandTests(TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.gateway = Gateway(self.clock)
        self.printed: list[str] = []
        self.session = Session(self.gateway, "admin", self.printed.append)
        self.table = commands()

    def text(self, line: str) -> str:
        result: Any = self.table.run(self.session, line)
        if not isinstance(result, (str, Reply)):
            result = run(self.clock, result)
        return result if isinstance(result, str) else result.text

    def test_scan_primary(self) -> None:
        text = self.text("mbus scan")
        self.assertIn("Primary scan of line 1 done: 4 meters, 251 of 251 addresses", text)
        self.assertRegex(text, r"addresses, \d+\.\d s \(floor \d+\.\d s, 1\.\d\dx\)\.", "its time against its floor")
        self.assertRegex(text, r"Primary\s+Ident")
        self.assertEqual(self.printed[0], "Scanning line 1 by primary address; Ctrl-C stops.")
        self.assertIn("  found: primary 10, secondary 41520063-ELS-08-03", self.printed)
        self.assertRegex(text, r"5\s+30405060\s+ABB\s+32 \(0x20\)\s+Electricity")
        self.assertRegex(text, r"1\s+12345678\s+Kamstrup \(KAM\)\s+25 \(0x19\)\s+Heat: Outlet")
        self.assertTrue(any(p.strip().startswith("50%") for p in self.printed), self.printed)
        status = self.text("mbus")
        self.assertIn("last primary scan: 4 meters", status)

    def test_scan_secondary(self) -> None:
        text = self.text("mbus scan sec 1")
        self.assertIn("Secondary scan of line 1 done: 4 meters", text)
        for meter in default_meters():
            self.assertIn(meter.address.ident, text)
        self.assertIn("Heat: Outlet", text)

    def test_scan_stopped(self) -> None:
        d = self.table.run(self.session, "mbus scan")
        self.clock.pump([0.1] * 20)
        self.assertIn("Primary scan of line 1 cancelled", self.text("mbus stop"))
        self.assertIn("cancelled", run(self.clock, d).text)
        self.assertEqual(self.text("mbus stop"), "No scan runs on line 1.")

    def test_ctrl_c_cancels_the_scan(self) -> None:
        d = self.table.run(self.session, "mbus scan")
        self.clock.pump([0.1] * 5)
        d.cancel()
        self.assertFalse(self.gateway.masters[1].scan.running)

    def test_one_scan_at_a_time(self) -> None:
        self.table.run(self.session, "mbus scan")
        self.assertIn("a primary scan is running", self.text("mbus scan secondary"))

    def test_read(self) -> None:
        text = self.text("mbus read 10")
        lines = text.splitlines()
        self.assertEqual(lines[0], "Meter at primary address 10 (2 telegrams)")
        for expected in (r"Manufacturer\s+Elster \(ELS\)\n", r"Version\s+8 \(0x08\)\n",
                         r"Secondary address\s+41520063-ELS-08-03\n", r"Medium\s+Gas\n",
                         r"\nRead \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(just now\); meter's clock 2024-03-12 14:23:00",
                         r"\n  Volume\s+3 214\.56 m³\n  Volume flow\s+0\.562 m³/h\n",
                         r"Operating time\s+1 630 days", r"\(15 records as decoded: add 'records'"):
            self.assertRegex(text, expected)
        self.assertNotIn("m^3", text)
        detail = self.text("mbus read 10 records")
        self.assertRegex(detail, r"Every record as decoded \(15\)\n  #\s+Description\s+Value\s+Unit\s+Function\s+"
                                 r"Storage\s+Time\n")
        self.assertRegex(detail, r"\n  2\s+Volume\s+3 214\.56\s+m³\s+instantaneous\s+0\s+2024-03-12 14:23:00\n")
        self.assertIn("'2 records' is one argument too many; use mbus read ADDRESS [LINE] [records]",
                      self.text("mbus read 10 1 2 records"))
        text = self.text("mbus read 12345678-KAM-19-04")
        self.assertIn("Meter at secondary address 12345678-KAM-19-04", text)

    def test_read_errors(self) -> None:
        self.assertEqual(self.text("mbus read 77"),
                         "mbus read: the meter at address 77 did not answer (4 tries)")
        self.assertIn("'300' is not a meter address", self.text("mbus read 300"))
        self.assertIn("'2' is not a line", self.text("mbus read 1 2"))
        self.assertIn("is not a kind of scan", self.text("mbus scan x"))
