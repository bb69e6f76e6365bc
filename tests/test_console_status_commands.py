"""
Tests for cmegw.console.status_commands: the ``show`` pages of the gateway's
state (status, network, tunnel, line, HTTP, log, auth).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from twisted.trial.unittest import TestCase

from cmegw.config.model import directive_for
from cmegw.console import status_commands as C
from cmegw.state import TunnelView
from cmegw.stats import TUNNEL_CONNECTED, LineStatistics, TunnelStatistics
from tests.test_console_framework import CommandTestMixin


class StatusCommandTests(CommandTestMixin, TestCase):
    """The show pages of the gateway's state."""

    def test_show_status(self):
        self.gateway.status.started_at = 0
        self.gateway.reactor.advance(77)
        self.gateway.state.lines = {1: LineStatistics(state="open", device="/dev/ttyUSB0")}
        self.gateway.state.tunnels = {1: TunnelView(1, TunnelStatistics(state=TUNNEL_CONNECTED, peer="127.0.0.1:5000"))}
        text = self.text("show status")
        self.assertIn("Product type         cmegw", text)
        self.assertIn("Software version     0.1.0", text)
        self.assertIn("Uptime               0 days 00:01:17", text)
        self.assertIn("Configuration saved  yes", text)
        self.assertIn("Line 1  RS232, 2400, Even, 8, 1, None; open /dev/ttyUSB0", text)
        self.assertIn("accept mode: connected (127.0.0.1:5000)", text)
        self.assertIn("PWR off  ERR off  LINK on  ACT off", text)
        self.assertNotIn("CONFIGURATION PROBLEM", text)

    def test_show_status_unsaved_pending_problem(self):
        self.text("set --no-save console.idle_timeout 60")
        self.text("set network.dhcp off")
        self.text("set --no-save console.idle_timeout 90")
        self.gateway.status.config_problem = "cmegw.toml is not valid TOML"
        text = self.text("show status")
        self.assertIn("Configuration saved    no: 'save' keeps the changes", text)
        self.assertIn("Waiting for a restart  network.dhcp", text)
        self.assertIn("CONFIGURATION PROBLEM: cmegw.toml is not valid TOML", text)
        self.assertIn("Tunnel 1  connect mode: disabled; accept mode: not running", text)

    def test_show_network(self):
        self.text("set network.dhcp off")
        self.text("set network.ip_address 192.168.1.5/24")
        text = self.text("show network")
        self.assertRegex(text, r"dhcp\s+on\s+off")
        self.assertRegex(text, r"ip_address\s+\"\"\s+192.168.1.5")
        self.assertRegex(text, r"netmask\s+\"\"\s+255.255.255.0")
        self.assertIn("not applied to it", text)

    def test_show_tunnel(self):
        stats = TunnelStatistics(completed_accepts=3, disconnects=2, octets_from_serial=120,
                                 octets_from_network=40, accept_time_closed=3723.0)
        self.gateway.state.tunnels = {1: TunnelView(1, stats)}
        text = self.text("show tunnel 1")
        self.assertIn("Completed accepts              3", text)
        self.assertIn("Disconnects                    2", text)
        self.assertIn("Octets forwarded from serial   120", text)
        self.assertIn("Octets forwarded from network  40", text)
        self.assertIn("Accept connection time         0 days 01:02:03", text)
        self.assertIn("Connect 12 connection time     0 days 00:00:00", text)
        self.assertIn("TCP keep-alive      45 s", text)
        self.assertIn("Disconnect timeout  10 s", text)
        self.assertEqual(self.text("show tunnel"), text, "the only tunnel")

    def test_show_tunnel_not_running(self):
        self.assertIn("not running", self.text("show tunnel 1"))

    def test_show_tunnel_bad_number(self):
        self.assertEqual(self.text("show tunnel 7"), "show tunnel: '7' is not a tunnel; tunnels: 1")
        self.assertEqual(self.text("show tunnel x"), "show tunnel: 'x' is not a tunnel; tunnels: 1")

    def test_show_line(self):
        stats = LineStatistics(rx_bytes=10, tx_bytes=20, parity_errors=None, framing_errors=2, queued_rx=0,
                               state="open", device="/dev/pts/9")
        self.gateway.state.lines = {1: stats}
        text = self.text("show line 1")
        self.assertIn("Line 1: RS232, 2400, Even, 8, 1, None", text)
        self.assertIn("Receiver bytes         10", text)
        self.assertIn("Transmitter bytes      20", text)
        self.assertIn("Parity errors          unavailable", text)
        self.assertIn("Framing errors         2", text)
        self.assertIn("Queued receive bytes   0", text)
        self.assertRegex(text, r"Baud rate +2400 ")
        self.assertIn("Adapter        not seen yet", text)
        self.assertEqual(self.text("show line 2"), "show line: '2' is not a line; lines: 1")

    def test_show_line_adapter_and_timeouts(self):
        stats = LineStatistics(state="open", baud_rate=2400, adapter="pseudo-terminal (simulated bus)",
                               low_latency="not supported by the driver", latency_timer="none",
                               adapter_slack=0.004, extra_slack=0.5, slack=0.504)
        self.gateway.state.lines = {1: stats}
        text = self.text("show line 1")
        for label, shown in (("Adapter", "pseudo-terminal (simulated bus)"),
                             ("Low latency", "not supported by the driver"),
                             ("Delivery slack", "504.0 ms (adapter 4.0 ms + extra 500.0 ms)"),
                             ("First-byte timeout", "696.1 ms at 2400 baud"),
                             ("Defragmentation timeout", "517.8 ms"),
                             ("Scan: tries again after silence", "1 (set line.1.scan_silent_retries)")):
            self.assertRegex(text, re.escape(label) + " +" + re.escape(shown))

    def test_show_line_every_line(self):
        """Without a number, every line's page, a blank line between them."""
        from cmegw.config.model import LineConfig

        config = self.gateway.running_config
        self.gateway.running_config = config.with_line(2, LineConfig(device="/dev/ttyUSB9", baud_rate=300))
        pages = self.text("show line").split("\n\n")
        self.assertEqual([page.splitlines()[0] for page in pages],
                         ["Line 1: RS232, 2400, Even, 8, 1, None", "Line 2: RS232, 300, Even, 8, 1, None"])
        self.assertEqual(pages[1], self.text("show line 2"))

    def test_show_http(self):
        text = self.text("show http")
        self.assertRegex(text, r"http_port\s+80\s+80")
        self.assertRegex(text, r"max_bytes\s+40960\s+40960")
        self.assertIn("HTTP statistics", text)

    def test_show_http_and_log_from_the_web_part(self):
        from cmegw.web.http import AccessLog, HttpStatistics

        access_log = AccessLog(max_entries=5)
        for i in range(7):
            access_log.add(f'127.0.0.1 12:00:0{i} "GET /{i} HTTP/1.1" 200 10')
        stats = HttpStatistics(rx_bytes=100, tx_bytes=2000, status_200=7, status_unknown=5,
                               by_status={200: 7, 303: 4, 405: 1})
        state = SimpleNamespace(stats=stats, access_log=access_log, listening={"http": "127.0.0.1:8080"})
        self.patch(self.gateway.state, "web", state)
        text = self.text("show http")
        self.assertRegex(text, r"Received\s+100 bytes")
        self.assertRegex(text, r"Sent\s+2 kB \(2000 bytes\)")
        self.assertRegex(text, r"200 OK\s+7")
        self.assertRegex(text, r"Other answers\s+5 \(303 See Other: 4, 405 Method Not Allowed: 1\)",
                         "the words of the web's HTTP statistics")
        self.assertNotIn("unknown", text)
        self.assertRegex(text, r"Entries\s+5")
        self.assertRegex(text, r"HTTP\s+127.0.0.1:8080")
        log_text = self.text("show log")
        self.assertEqual(log_text.splitlines()[0], '127.0.0.1 12:00:02 "GET /2 HTTP/1.1" 200 10')
        self.assertEqual(len(log_text.splitlines()), 5)
        self.assertEqual(self.text("show log 2").splitlines()[0], '127.0.0.1 12:00:05 "GET /5 HTTP/1.1" 200 10')
        self.assertEqual(self.text("show log 0"),
                         "show log: '0' is not a count; use a whole number of entries, 1 or more")
        self.assertEqual(self.text("clear log"), "The HTTP access log is cleared.")
        self.assertEqual(self.text("show log"), "The HTTP access log is empty.")

    def test_show_log_without_web(self):
        self.patch(self.gateway.state, "web", None)
        self.assertIn("not available", self.text("show log"))

    def test_web_state_not_running(self):
        """The web part raises LookupError while it is not running: no log for the console."""
        self.assertIsNone(C.web_state(self.gateway))

    def test_show_auth_never_shows_hashes(self):
        text = self.text("show auth")
        self.assertRegex(text, r"/\s+config\s+Digest\s+admin")
        for user in directive_for(self.gateway.store.config.auth, "/").users:
            self.assertNotIn(user.ha1_md5, text)
            self.assertNotIn(user.ha1_sha256, text)
