"""
Readings in the console end to end: Debian's ``telnet`` (through pexpect, as
tests/test_console_real.py drives it) against a real ``twistd cmegw
--simulate``: ``mbus read`` and ``show meter`` give a reading as a person
reads the meter, the records on request.  Loopback only; every wait is bounded.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.support import GatewayProcess, free_port, require_program
from tests.test_console_real import LOOPBACK_WEB, PROMPT, telnet_login


class ReadingsOverTelnetTests(TestCase):
    def setUp(self):
        self.telnet = require_program("telnet")
        self.console_port = free_port()
        self.gw = GatewayProcess(Path(self.mktemp()), [
            "--config", "cmegw.toml", "--simulate", "--tunnel", f"tcp:{free_port()}:interface=127.0.0.1",
            "--console", f"tcp:{self.console_port}:interface=127.0.0.1", *LOOPBACK_WEB])
        self.addCleanup(self.gw.stop)
        self.gw.start([self.console_port])

    def command(self, child, line: str) -> str:
        child.send(line + "\r")
        child.expect(PROMPT)
        return child.before.replace("\r\n", "\n")

    def test_read_as_the_meter_shows_it(self):
        child = telnet_login(self, self.telnet, self.console_port)

        text = self.command(child, "mbus read 1")
        for expected in (r"Meter at primary address 1 \(1 telegram\)", r"Manufacturer\s+Kamstrup \(KAM\)\n",
                         r"Version\s+25 \(0x19\)\n", r"\nRead \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(just now\); "
                         r"meter's clock 2024-03-12 14:23:00", r"\n  Energy\s+48 213 kWh\n  Volume\s+1 234\.56 m³\n",
                         r"On time\s+759 days", r"\(14 records as decoded: add 'records' to the command\)"):
            self.assertRegex(text, expected)
        self.assertNotIn("m^3", text)
        self.assertRegex(self.command(child, "mbus read 1 records"),
                         r"Every record as decoded \(14\)\n  #\s+Description\s+Value\s+Unit\s+Function\s+Storage\s+Time\n")

        self.assertIn("saved", self.command(child, "meter add heat-1 1 12345678-KAM-19-04"))
        self.assertRegex(self.command(child, "readout now heat-1"), r"heat-1: .*48 213 kWh, 1 234\.56 m³")
        page = self.command(child, "show meter heat-1")
        self.assertRegex(page, r"Meter\s+Kamstrup \(KAM\) 12345678, version 25 \(0x19\), Heat: Outlet")
        self.assertRegex(page, r"Last reading\nRead .*, reading 1; meter's clock 2024-03-12 14:23:00")
        self.assertRegex(page, r"\n  Energy\s+48 213 kWh\n")
        child.send("exit\r")
        child.expect("Bye.")
