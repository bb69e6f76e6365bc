"""
Tests for `cmegw.web.pages.layout` and `cmegw.web.pages.admin`: every admin
page renders in the layout, and the web files are found (a checkout, or
installed by setup.cfg's data_files).
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest

import cmegw
from cmegw.web.pages.layout import web_root
from tests.web_helpers import PagesTestBase


class EveryPageTests(PagesTestBase):
    PAGES = {
        "/status": ["Product type", "Software version", "Build date", "Serial number", "Uptime",
                    "Configuration saved permanently", "RS232, 2400, Even, 8, 1, None", "PWR", "ERR", "LINK",
                    "ACT", "waiting", "connect mode", "02:00:00:00:00:01", "100 Mbit/s, full duplex",
                    "127.0.0.5 / 255.0.0.0", "DHCP", "127.0.0.53", "127.0.0.54", "gw1"],
        "/network": ["Current", "After restart", "BOOTP client", "DHCP client", "IP address", "Network mask",
                     "Default gateway", "Host name", "Domain", "DNS suffix search list", "DHCP client ID",
                     "are not applied to the host"],
        "/network/interface": ["network.bootp", "network.dhcp", "network.ip_address", "network.gateway",
                               "network.hostname", "network.domain", "network.dhcp_client_id",
                               "network.primary_dns", "network.secondary_dns"],
        "/network/link": ["Link status", "100 Mbit/s", "full", "network.link_speed", "network.link_duplex"],
        "/tcpip": ["Completed accepts", "Completed connects", "Disconnects", "Dropped accepts", "Dropped connects",
                   "Octets forwarded from serial", "Octets forwarded from network", "Accept connection time",
                   "0 days 00:00:00"],
        "/tcpip/accept": ["tunnel.1.listen", "tunnel.1.keepalive", "tunnel.1.enabled"],
        "/tcpip/disconnect": ["tunnel.1.disconnect_timeout"],
        "/serial": ["Receiver bytes", "Transmitter bytes", "Receiver breaks", "Transmitter breaks",
                    "Parity errors", "Framing errors", "Overrun errors", "No rx buffer errors",
                    "Queued receive bytes", "Queued transmit bytes", "unavailable"],
        "/serial/configuration": ["line.1.baud_rate", "300", "2400", "Changes apply at once."],
        "/http": ["Received", "Sent", "200 OK", "400 Bad Request", "401 Unauthorized", "404 Not Found",
                  "408 Request Timeout", "413 Request Entity Too Large", "501 Not Implemented", "Other answers",
                  "socket errors", "1.23 kB", "View the log", "Clear the log"],
        "/http/log": ["GET /status HTTP/1.1", "&lt;b&gt;agent&lt;/b&gt;"],
        "/http/configuration": ["http.enabled", "http.http_port", "http.https_port", "http.tls_versions",
                                "TLSv1.2", "TLSv1.3", "http.max_timeout", "http.max_bytes", "http.logging",
                                "http.max_log_entries", "http.log_format"],
        "/http/authentication": ["Directive /", "config", "Digest", "admin", "Add a directive",
                                 "Add user / set password"],
        "/http/certificate": ["CN=gw1", "AA:BB", "Upload and use"],
        "/system": ["Restart the gateway", "Restore factory defaults", "Verify, install and restart",
                    cmegw.__version__],
    }

    @defer.inlineCallbacks
    def test_every_page(self) -> None:
        """Each page of the device answers 200 with the navigation, its tabs and every field."""
        for path, expected in self.PAGES.items():
            response, body = yield self.get(path)
            self.assertEqual(response.code, 200, path)
            for section in ("Status", "Network", "M-Bus TCP/IP", "M-Bus Serial", "HTTP", "System"):
                self.assertIn(f">{section}</a>", body, path)
            for text in expected:
                self.assertIn(text, body, f"{text!r} missing on {path}")
            self.assertNotIn("ha1", body, path)
            self.assertNotIn("3d34f894867d18e8c3bbc8f3f37fbecb", body, path)
            headers = response.headers
            self.assertIn(b"default-src 'self'", headers.getRawHeaders(b"content-security-policy")[0])
            self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-store"])

    @defer.inlineCallbacks
    def test_root_redirects_to_status(self) -> None:
        response, _ = yield self.get("/", allow_redirects=False)
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders(b"location"), [b"/status"])

    @defer.inlineCallbacks
    def test_not_found(self) -> None:
        response, body = yield self.get("/nowhere")
        self.assertEqual(response.code, 404)
        self.assertIn("There is no such page here.", body)

    @defer.inlineCallbacks
    def test_static_files(self) -> None:
        response, body = yield self.get("/static/cmegw.css")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/css; charset=utf-8"])
        self.assertNotIn("http://", body.replace("http://www.w3.org", ""))
        response, _ = yield self.get("/static/restart.js")
        self.assertEqual(response.code, 200)
        response, _ = yield self.get("/static/missing.css")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_no_external_resources(self) -> None:
        """Nothing is loaded from elsewhere: the box often sits on a closed network."""
        for path in self.PAGES:
            _, body = yield self.get(path)
            for url in re.findall(r'(?:src|href)="([^"]+)"', body):
                self.assertTrue(url.startswith(("/", "#")), f"{url} on {path}")

    @defer.inlineCallbacks
    def test_status_uptime_and_flags(self) -> None:
        _, body = yield self.get("/status")
        self.assertRegex(body, r'id="uptime">\d+ days \d\d:\d\d:\d\d<')
        self.assertIn("The factory password is in use.", body)
        self.assertIn('href="/http/authentication?user=admin&amp;uri=%2F#users"', body)
        self.assertNotIn("Configuration problem", body)

    @defer.inlineCallbacks
    def test_last_hour_graphs(self) -> None:
        """Status and the M-Bus pages show the last hour as SVG charts with their numbers as text."""
        for path, title in (("/status", "Tunnel 1"), ("/tcpip", "Tunnel 1"), ("/serial", "Line 1")):
            _, body = yield self.get(path)
            self.assertIn("Last hour", body, path)
            self.assertIn("<svg", body, path)
            self.assertIn(title, body, path)
            self.assertIn('href="/static/ops.css"', body, path)
        _, body = yield self.get("/serial")
        self.assertIn('href="/trace"', body)

    @defer.inlineCallbacks
    def test_config_problem_banner(self) -> None:
        self.gateway.state.status.config_problem = "cmegw.toml is not valid TOML: line 3"
        for path in ("/status", "/serial"):
            _, body = yield self.get(path)
            self.assertIn("Configuration problem: ", body)
            self.assertIn("cmegw.toml is not valid TOML: line 3", body)

    @defer.inlineCallbacks
    def test_tunnel_connected_on_status(self) -> None:
        stats = self.gateway.state.tunnel_stats[1]
        stats.state, stats.peer = "connected", "127.0.0.9:5555"
        _, body = yield self.get("/status")
        self.assertIn("connected to 127.0.0.9:5555", body)


class WebRootTests(unittest.TestCase):
    def test_checkout(self) -> None:
        root = web_root()
        self.assertTrue((root / "templates" / "layout.xml").is_file())
        self.assertTrue((root / "static" / "cmegw.css").is_file())
        self.assertTrue((root / "API.md").is_file())

    def test_every_web_file_is_installed(self) -> None:
        """setup.cfg's data_files ship every file of web/ to where web_root() looks after `pip install .`."""
        import configparser
        import glob

        from cmegw.web.pages.layout import DATA_SUBDIR

        repo = Path(__file__).resolve().parents[1]
        parser = configparser.ConfigParser()
        parser.read(repo / "setup.cfg")
        shipped = {}
        for target, patterns in parser["options.data_files"].items():
            for pattern in patterns.split():
                for found in glob.glob(str(repo / pattern)):
                    shipped[Path(found).relative_to(repo / "web")] = Path(target) / Path(found).name
        files = {p.relative_to(repo / "web") for p in (repo / "web").rglob("*") if p.is_file()}
        self.assertEqual(set(shipped), files)
        for source, target in shipped.items():
            self.assertEqual(target, DATA_SUBDIR / source)
