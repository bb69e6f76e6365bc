"""
Tests for the admin pages and the JSON API (`cmegw.web.app` and its
``pages_*`` modules), through `treq.testing.StubTreq` against a real
`GatewayService` on a temporary configuration and a pty line.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

import cmegw
from cmegw.config.model import ConfigError
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService, Overrides
from cmegw.web import pages_http
from cmegw.web.app import admin_resource, build_app
from cmegw.web.http import HttpStatistics
from cmegw.host.read import HostNetwork
from cmegw.web.pages import Admin, web_root
from cmegw.web.pages_system import RESTART_DELAY, SoftwareUpdater, UpdateError, pidfile_of, verify_wheel
from tests.support import open_pty

BASE = "http://127.0.0.1:8080"

HOST = HostNetwork(interface="eth0", mac="02:00:00:00:00:01", operstate="up", speed="100", duplex="full",
                   hostname="gw1", domain="example.com", search=("example.com",), address="127.0.0.5",
                   netmask="255.0.0.0", address_source="DHCP", gateway="127.0.0.1",
                   dns=("127.0.0.53", "127.0.0.54"))


class FakeLog:
    def __init__(self) -> None:
        self.entries = ['127.0.0.1 12:00:00 "GET /status HTTP/1.1" 200 99 "-" "<b>agent</b>"']

    @property
    def bytes(self) -> int:
        return sum(len(e) + 1 for e in self.entries)

    def clear(self) -> None:
        self.entries = []


@attrs.frozen
class FakeCertificate:
    subject: str = "CN=gw1"
    issuer: str = "CN=gw1"
    not_before: str = "2026-01-01"
    not_after: str = "2036-01-01"
    self_signed: bool = True
    fingerprint: str = "AA:BB"
    path: str = "/tmp/cert.pem"
    problem: None = None


class FakeWeb:
    """What `cmegw.web.service.web_state` gives the pages."""

    def __init__(self) -> None:
        self.stats = HttpStatistics(rx_bytes=1234, tx_bytes=5678, status_200=7, status_400=1, status_401=2,
                                    status_404=3)
        self.access_log = FakeLog()
        self.tls = FakeCertificate()
        self.listening = {"http": "127.0.0.1:8080", "https": "127.0.0.1:8443"}
        self.installed: list[tuple[bytes, bytes]] = []

    def install_certificate(self, cert: bytes, key: bytes) -> FakeCertificate:
        if b"BEGIN CERTIFICATE" not in cert:
            raise ValueError("the certificate is not PEM")
        self.installed.append((cert, key))
        self.tls = FakeCertificate(subject="CN=new")
        return self.tls


def csrf_token(body: str) -> str:
    found = re.search(r'name="_csrf" value="([0-9a-f]+)"', body)
    assert found, "no CSRF token in the page"
    return found.group(1)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, bytes]:
    boundary = "cmegwtestboundary7MA4YWxk"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}".encode()


def make_wheel(version: str = "0.2.0", name: str = "cmegw", tamper: bool = False,
               metadata_version: str | None = None) -> bytes:
    """A small wheel of the shape pip installs (METADATA, WHEEL, RECORD with hashes)."""
    info = f"{name}-{version}.dist-info"
    files = {
        "cmegw/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {metadata_version or version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for path, data in files.items():
            z.writestr(path, data + (b"# changed\n" if tamper and path.endswith("__init__.py") else b""))
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return out.getvalue()


class FakeRunner:
    """Stands for pip: records the command lines and answers with a chosen exit code."""

    def __init__(self, code: int = 0, output: bytes = b"Successfully installed cmegw") -> None:
        self.code = code
        self.output = output
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> defer.Deferred:
        self.calls.append(argv)
        return defer.succeed((self.output, self.code))


class PagesTestBase(unittest.TestCase):
    """A running gateway on a pty with the admin resource in a StubTreq."""

    pip_code = 0

    def setUp(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir(parents=True)
        self.store = ConfigStore(folder / "cmegw.toml")
        self.store.load()
        master, slave, path = open_pty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        self.gateway = GatewayService(self.store, reactor,
                                      Overrides(device=path, tunnel="tcp:0:interface=127.0.0.1"))
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.clock = task.Clock()
        self.web = FakeWeb()
        self.runner = FakeRunner(self.pip_code)
        self.restarted_process: list[bool] = []
        self.restarts: list[str] = []

        def updater(admin: Any) -> SoftwareUpdater:
            return SoftwareUpdater(admin, run=self.runner, restart_process=lambda: self.restarted_process.append(True))

        self.resource = admin_resource(self.gateway, clock=self.clock, host_network=lambda: HOST,
                                       web=lambda: self.web, updater=updater)
        self.http = StubTreq(self.resource)

    @defer.inlineCallbacks
    def get(self, path: str, **kw: Any) -> Any:
        response = yield self.http.get(BASE + path, **kw)
        body = yield response.text()
        return response, body

    @defer.inlineCallbacks
    def token(self, path: str = "/status") -> Any:
        response, body = yield self.get(path)
        return csrf_token(body) if "_csrf" in body else csrf_token((yield self.get("/system"))[1])

    @defer.inlineCallbacks
    def post(self, path: str, fields: dict[str, str], token: str | None = None, headers: Any = None) -> Any:
        if token is None:
            token = yield self.token("/system")
        data = dict(fields)
        if token:
            data["_csrf"] = token
        all_headers = {b"content-type": [b"application/x-www-form-urlencoded"]}
        all_headers.update(headers or {})
        response = yield self.http.post(BASE + path, data=urlencode(data).encode(), headers=all_headers)
        body = yield response.text()
        return response, body

    @defer.inlineCallbacks
    def post_multipart(self, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> Any:
        token = yield self.token("/system")
        body, ctype = multipart({"_csrf": token, **fields}, files)
        response = yield self.http.post(BASE + path, data=body, headers={b"content-type": [ctype]})
        text = yield response.text()
        return response, text

    @defer.inlineCallbacks
    def api(self, method: str, path: str, body: Any = None, content_type: bytes = b"application/json",
            headers: Any = None) -> Any:
        all_headers = {b"content-type": [content_type]}
        all_headers.update(headers or {})
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        response = yield self.http.request(method, BASE + path, data=data, headers=all_headers)
        text = yield response.text()
        return response, (json.loads(text) if text.strip().startswith(("{", "[")) else text)


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
                   "Connect 1 connection time", "Connect 12 connection time", "0 days 00:00:00"],
        "/tcpip/accept": ["tunnel.1.listen", "tunnel.1.keepalive", "tunnel.1.enabled"],
        "/tcpip/disconnect": ["tunnel.1.disconnect_timeout"],
        "/serial": ["Receiver bytes", "Transmitter bytes", "Receiver breaks", "Transmitter breaks",
                    "Parity errors", "Framing errors", "Overrun errors", "No rx buffer errors",
                    "Queued receive bytes", "Queued transmit bytes", "unavailable"],
        "/serial/configuration": ["line.1.baud_rate", "300", "2400", "Changes apply at once."],
        "/http": ["Rx bytes", "Tx bytes", "200 OK", "400 Bad Request", "401 Unauthorized", "404 Not Found",
                  "408 Request Timeout", "413 Request Entity Too Large", "501 Not Implemented", "Status unknown",
                  "Work queue full", "Socket error", "Memory error", "1234", "View the log", "Clear the log"],
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
        self.assertIn('href="/http/authentication#users"', body)
        self.assertNotIn("Configuration problem", body)

    @defer.inlineCallbacks
    def test_last_hour_graphs(self) -> None:
        """Status and the M-Bus pages show the last hour as SVG charts with their numbers as text."""
        for path, title in (("/status", "Tunnel 1"), ("/tcpip", "Tunnel 1"), ("/serial", "Line 1")):
            _, body = yield self.get(path)
            self.assertIn("Last hour", body, path)
            self.assertIn("<svg", body, path)
            self.assertIn(title, body, path)
            self.assertIn("/ops/ops.css", body, path)
        _, body = yield self.get("/serial")
        self.assertIn('href="/trace"', body)

    @defer.inlineCallbacks
    def test_config_problem_banner(self) -> None:
        self.gateway.status.config_problem = "cmegw.toml is not valid TOML: line 3"
        for path in ("/status", "/serial"):
            _, body = yield self.get(path)
            self.assertIn("Configuration problem: ", body)
            self.assertIn("cmegw.toml is not valid TOML: line 3", body)

    @defer.inlineCallbacks
    def test_tunnel_connected_on_status(self) -> None:
        stats = self.gateway.tunnel_stats[1]
        stats.state, stats.peer = "connected", "127.0.0.9:5555"
        _, body = yield self.get("/status")
        self.assertIn("connected to 127.0.0.9:5555", body)


class SerialFormTests(PagesTestBase):
    @defer.inlineCallbacks
    def test_baud_rate_applies_at_once(self) -> None:
        response, body = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"})
        self.assertEqual(response.code, 200)
        self.assertIn("Applied at once: ", body)
        self.assertIn("Baud rate", body)
        self.assertEqual(self.store.config.lines[1].baud_rate, 300)
        self.assertEqual(self.gateway.running_config.lines[1].baud_rate, 300)
        self.assertEqual(self.gateway.lines[1].stats.baud_rate, 300)
        _, status = yield self.get("/status")
        self.assertIn("RS232, 300, Even, 8, 1, None", status)

    @defer.inlineCallbacks
    def test_bad_baud_rate_is_shown_at_the_field(self) -> None:
        response, body = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "1234"})
        self.assertEqual(response.code, 400)
        self.assertIn('class="field-error"', body)
        self.assertIn("line.1.baud_rate: 1234 is not allowed; use one of 300", body)
        self.assertIn('aria-invalid="true"', body)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_unknown_line(self) -> None:
        response, _ = yield self.post("/serial/configuration", {"_group": "7", "line.7.baud_rate": "300"})
        self.assertEqual(response.code, 400)


class CsrfTests(PagesTestBase):
    @defer.inlineCallbacks
    def test_without_token(self) -> None:
        yield self.get("/status")
        response, body = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"},
                                         token="")
        self.assertEqual(response.code, 403)
        self.assertIn("Nothing was changed", body)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_wrong_token(self) -> None:
        yield self.get("/status")
        response, _ = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"},
                                      token="00" * 32)
        self.assertEqual(response.code, 403)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_token_of_another_session(self) -> None:
        """A token is worth nothing without its session cookie (a fresh client has another)."""
        token = yield self.token()
        other = StubTreq(self.resource)
        yield other.get(BASE + "/status")
        response = yield other.post(BASE + "/serial/configuration",
                                    data=urlencode({"_group": "1", "line.1.baud_rate": "300", "_csrf": token}).encode(),
                                    headers={b"content-type": [b"application/x-www-form-urlencoded"]})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_cross_site_origin(self) -> None:
        token = yield self.token()
        response, _ = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"},
                                      token=token, headers={b"origin": [b"http://evil.example"]})
        self.assertEqual(response.code, 403)
        response, _ = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"},
                                      token=token, headers={b"origin": [b"http://127.0.0.1:8080"]})
        self.assertEqual(response.code, 200)

    @defer.inlineCallbacks
    def test_every_form_needs_the_token(self) -> None:
        """Every POST route of the pages (the JSON API has its own guard) refuses a request without the token."""
        app = build_app(Admin(self.gateway, clock=self.clock, host_network=lambda: HOST, web=lambda: self.web))
        forms = sorted(re.sub(r"<[^>]+>", "1", rule.rule) for rule in app.url_map.iter_rules()
                       if "POST" in rule.methods and not rule.rule.startswith("/api"))
        self.assertIn("/system/restart", forms)
        config = self.store.config
        yield self.get("/status")
        for path in forms:
            response, body = yield self.post(path, {"_group": "1", "line": "1", "confirm": "on"}, token="00" * 32)
            self.assertEqual(response.code, 403, path)
            self.assertIn("Nothing was changed", body, path)
        self.assertIs(self.store.config, config)
        self.assertEqual(self.clock.getDelayedCalls(), [], "no restart was scheduled")
        self.assertEqual(len(self.web.access_log.entries), 1, "the log was not cleared")

    @defer.inlineCallbacks
    def test_session_cookie_flags(self) -> None:
        response, _ = yield self.get("/status")
        cookie = response.headers.getRawHeaders(b"set-cookie")[0].lower()
        self.assertIn(b"httponly", cookie)
        self.assertIn(b"samesite=strict", cookie)


class NetworkFormTests(PagesTestBase):
    FORM = {"_group": "interface", "network.dhcp": "on", "network.ip_address": "", "network.gateway": "",
            "network.hostname": "", "network.domain": "", "network.dhcp_client_id": "",
            "network.primary_dns": "", "network.secondary_dns": "", "network.interface": "",
            "network.backend": "networkd"}

    @defer.inlineCallbacks
    def test_hostname_rule_inline_and_typed_values_kept(self) -> None:
        form = dict(self.FORM, **{"network.hostname": "1gateway", "network.domain": "plant.example"})
        response, body = yield self.post("/network/interface", form)
        self.assertEqual(response.code, 400)
        self.assertIn("start with a letter, continue with letters, digits or hyphens", body)
        self.assertIn('value="1gateway"', body)
        self.assertIn('value="plant.example"', body)
        self.assertEqual(self.store.config.network.hostname, "")
        self.assertEqual(self.store.config.network.domain, "")

    @defer.inlineCallbacks
    def test_address_forms(self) -> None:
        """Alone (class mask), CIDR, or with an explicit mask; each waits for a restart."""
        for typed, address, mask in (("192.168.1.1/24", "192.168.1.1", "255.255.255.0"),
                                     ("10.1.2.3", "10.1.2.3", "255.0.0.0"),
                                     ("172.16.0.9 255.255.0.0", "172.16.0.9", "255.255.0.0"),
                                     ("192.168.7.7", "192.168.7.7", "255.255.255.0")):
            form = dict(self.FORM, **{"network.ip_address": typed})
            del form["network.dhcp"]
            response, body = yield self.post("/network/interface", form)
            self.assertEqual(response.code, 200, body)
            self.assertEqual((self.store.config.network.ip_address, self.store.config.network.netmask),
                             (address, mask), typed)
            self.assertIn(f'value="{address} {mask}"', body)
        self.assertIn("After a restart: ", body)
        self.assertIn("Saved changes wait for a restart", body)
        self.assertFalse(self.store.config.network.dhcp)
        self.assertTrue(self.gateway.running_config.network.dhcp)
        _, status = yield self.get("/network")
        self.assertIn("192.168.7.7", status)

    @defer.inlineCallbacks
    def test_every_wrong_field_is_marked(self) -> None:
        form = dict(self.FORM, **{"network.hostname": "9bad-", "network.ip_address": "10.0.0.1/33"})
        response, body = yield self.post("/network/interface", form)
        self.assertEqual(response.code, 400)
        self.assertEqual(body.count('class="field-error"'), 2)
        self.assertIn("network.hostname: &#x27;9bad-&#x27; is not allowed", body.replace("'", "&#x27;"))
        self.assertIn("network.ip_address: &#x27;10.0.0.1/33&#x27; is not allowed", body.replace("'", "&#x27;"))

    @defer.inlineCallbacks
    def test_bad_address(self) -> None:
        response, body = yield self.post("/network/interface", dict(self.FORM, **{"network.ip_address": "1.2.3"}))
        self.assertEqual(response.code, 400)
        self.assertIn("in CIDR form", body)
        self.assertIn('value="1.2.3"', body)

    @defer.inlineCallbacks
    def test_dhcp_ignores_static_values(self) -> None:
        yield self.post("/network/interface", dict(self.FORM, **{"network.ip_address": "192.168.1.1/24"}))
        _, body = yield self.get("/network")
        self.assertIn("(ignored: DHCP/BOOTP on)", body)

    @defer.inlineCallbacks
    def test_link(self) -> None:
        response, body = yield self.post("/network/link", {"_group": "link", "network.link_speed": "100",
                                                           "network.link_duplex": "full"})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.config.network.link_speed, "100")
        self.assertIn("After a restart: ", body)
        response, body = yield self.post("/network/link", {"_group": "link", "network.link_speed": "1000",
                                                           "network.link_duplex": "full"})
        self.assertEqual(response.code, 400)
        self.assertIn("network.link_speed", body)


class TunnelFormTests(PagesTestBase):
    @defer.inlineCallbacks
    def test_keepalive(self) -> None:
        form = {"_group": "1", "tunnel.1.enabled": "on", "tunnel.1.listen": "tcp:10001",
                "tunnel.1.keepalive": "abc", "tunnel.1.on_busy": "refuse"}
        response, body = yield self.post("/tcpip/accept", form)
        self.assertEqual(response.code, 400)
        self.assertIn("tunnel.1.keepalive: &#x27;abc&#x27; is not allowed; use a whole number", body.replace("'", "&#x27;"))
        self.assertIn('value="abc"', body)
        form["tunnel.1.keepalive"] = "60"
        response, body = yield self.post("/tcpip/accept", form)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.config.tunnels[1].keepalive, 60)
        self.assertEqual(self.gateway.running_config.tunnels[1].keepalive, 60)
        self.assertIn("Applied at once", body)
        # The command line's endpoint stays in force and the page says so.
        self.assertIn("in force now: ", body)

    @defer.inlineCallbacks
    def test_disconnect_timeout(self) -> None:
        response, body = yield self.post("/tcpip/disconnect", {"_group": "1", "tunnel.1.disconnect_timeout": "-1"})
        self.assertEqual(response.code, 400)
        self.assertIn("use a whole number from 0 to 86400", body)
        response, body = yield self.post("/tcpip/disconnect", {"_group": "1", "tunnel.1.disconnect_timeout": "30"})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.config.tunnels[1].disconnect_timeout, 30)

    @defer.inlineCallbacks
    def test_connection_times(self) -> None:
        stats = self.gateway.tunnel_stats[1]
        stats.accept_time_closed = 77.0
        stats.connect_times[0] = 90061.0
        _, body = yield self.get("/tcpip")
        self.assertIn("0 days 00:01:17", body)
        self.assertIn("1 days 01:01:01", body)


class HttpPageTests(PagesTestBase):
    FORM = {"_group": "http", "http.enabled": "on", "http.http_port": "8080", "http.https_port": "8443",
            "http.interface": "", "http.max_timeout": "10", "http.max_bytes": "40960", "http.logging": "on",
            "http.max_log_entries": "50", "http.log_format": "%h %t \"%r\" %s"}

    @defer.inlineCallbacks
    def test_configuration(self) -> None:
        response, body = yield self.post("/http/configuration", dict(self.FORM, **{"http.max_bytes": "10"}))
        self.assertEqual(response.code, 400)
        self.assertIn("http.max_bytes: 10 is not allowed", body)
        self.assertEqual(self.store.config.http.max_bytes, 40960)
        response, body = yield self.post("/http/configuration", dict(self.FORM, **{"http.max_bytes": "65536"}))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.config.http.max_bytes, 65536)
        self.assertEqual(self.store.config.http.tls_versions, ())
        self.assertEqual(self.store.config.http.http_port, 8080)
        self.assertIn("Applied at once: ", body)
        self.assertIn("After a restart: ", body)
        form = dict(self.FORM)
        body_bytes = urlencode(list(form.items()) + [("http.tls_versions", "TLSv1.3"),
                                                     ("_csrf", (yield self.token()))]).encode()
        response = yield self.http.post(BASE + "/http/configuration", data=body_bytes,
                                        headers={b"content-type": [b"application/x-www-form-urlencoded"]})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.config.http.tls_versions, ("TLSv1.3",))

    @defer.inlineCallbacks
    def test_log_clear(self) -> None:
        response, body = yield self.post("/http/log/clear", {})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.web.access_log.entries, [])
        self.assertIn("The log was cleared.", body)

    @defer.inlineCallbacks
    def test_certificate_upload(self) -> None:
        cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        key = b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
        response, body = yield self.post_multipart("/http/certificate", {}, {"certificate": ("c.pem", cert)})
        self.assertEqual(response.code, 400)
        self.assertIn("Choose a PEM file.", body)
        response, body = yield self.post_multipart("/http/certificate", {}, {"certificate": ("c.pem", b"junk"),
                                                                            "private_key": ("k.pem", key)})
        self.assertEqual(response.code, 400)
        self.assertIn("the certificate is not PEM", body)
        response, body = yield self.post_multipart("/http/certificate", {}, {"certificate": ("c.pem", cert),
                                                                            "private_key": ("k.pem", key)})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.web.installed, [(cert, key)])
        self.assertIn("CN=new", body)


class AuthenticationPageTests(PagesTestBase):
    @defer.inlineCallbacks
    def test_change_the_factory_password(self) -> None:
        response, body = yield self.post("/http/authentication/user",
                                         {"uri": "/", "name": "admin", "password": "s3cret", "confirm": "other"})
        self.assertEqual(response.code, 400)
        self.assertIn("type the same password twice", body)
        self.assertNotIn("s3cret", body)
        response, body = yield self.post("/http/authentication/user",
                                         {"uri": "/", "name": "admin", "password": "s3cret", "confirm": "s3cret"})
        self.assertEqual(response.code, 200)
        self.assertNotIn("The factory password is in use", body)
        self.assertNotIn("s3cret", body)
        user = self.store.config.auth[0].users[0]
        self.assertTrue(user.check_password("config", "s3cret"))
        self.assertNotIn(user.ha1_md5, body)

    @defer.inlineCallbacks
    def test_add_and_delete_user(self) -> None:
        response, body = yield self.post("/http/authentication/user",
                                         {"uri": "/", "name": "bad name", "password": "x", "confirm": "x"})
        self.assertEqual(response.code, 400)
        self.assertIn("without spaces, colons", body)
        self.assertIn('value="bad name"', body)
        yield self.post("/http/authentication/user", {"uri": "/", "name": "bob", "password": "pw", "confirm": "pw"})
        self.assertEqual([u.name for u in self.store.config.auth[0].users], ["admin", "bob"])
        response, body = yield self.post("/http/authentication/user/delete", {"uri": "/", "name": "admin"})
        self.assertEqual(response.code, 200)
        self.assertEqual([u.name for u in self.store.config.auth[0].users], ["bob"])
        response, body = yield self.post("/http/authentication/user/delete", {"uri": "/", "name": "bob"})
        self.assertEqual(response.code, 400)
        self.assertIn("the last user of a directive that asks for a password stays", body)

    @defer.inlineCallbacks
    def test_directives(self) -> None:
        response, body = yield self.post("/http/authentication/directive",
                                         {"uri": "api", "realm": "config", "auth_type": "Basic"})
        self.assertEqual(response.code, 400)
        self.assertIn("use a path that begins with /", body)
        self.assertIn('value="api"', body)
        response, body = yield self.post("/http/authentication/directive",
                                         {"uri": "/api", "realm": "api", "auth_type": "None"})
        self.assertEqual(response.code, 200)
        self.assertIn("Directive /api", body)
        self.assertEqual([d.uri for d in self.store.config.auth], ["/", "/api"])
        response, body = yield self.post("/http/authentication/directive",
                                         {"uri": "/api", "realm": "api", "auth_type": "None"})
        self.assertEqual(response.code, 400)
        self.assertIn("each URI once", body)
        response, body = yield self.post("/http/authentication/directive/type", {"uri": "/api", "auth_type": "Digest"})
        self.assertEqual(response.code, 400)
        self.assertIn("add a user to this directive", body)
        yield self.post("/http/authentication/user", {"uri": "/api", "name": "m", "password": "pw", "confirm": "pw"})
        response, _ = yield self.post("/http/authentication/directive/type", {"uri": "/api", "auth_type": "Digest"})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.config.auth[1].auth_type, "Digest")
        self.assertTrue(self.store.config.auth[1].users[0].check_password("api", "pw"))
        response, body = yield self.post("/http/authentication/directive/delete", {"uri": "/"})
        self.assertEqual(response.code, 400)
        self.assertIn("protects every page", body)
        response, _ = yield self.post("/http/authentication/directive/delete", {"uri": "/api"})
        self.assertEqual(response.code, 200)
        self.assertEqual([d.uri for d in self.store.config.auth], ["/"])

    def test_operations_raise_config_errors(self) -> None:
        config = self.store.config
        from cmegw.config import auth as config_auth

        self.assertRaises(ConfigError, config_auth.find_directive, config, "/nope")
        self.assertRaises(ConfigError, config_auth.delete_user, config, "/", "nobody")
        view = pages_http.directives_view(config)
        self.assertEqual(view, [{"uri": "/", "realm": "config", "auth_type": "Digest", "users": ["admin"]}])


class SystemPageTests(PagesTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.gateway.restart = lambda: self.restarts.append("restart") or defer.succeed(None)  # type: ignore
        self.gateway.factory_reset = lambda: self.restarts.append("factory") or defer.succeed(None)  # type: ignore

    @defer.inlineCallbacks
    def test_restart_answers_first(self) -> None:
        response, body = yield self.post("/system/restart", {})
        self.assertEqual(response.code, 202)
        self.assertIn('src="/static/restart.js"', body)
        self.assertIn('http-equiv="refresh" content="20;url=/status"', body)
        self.assertRegex(body, r'data-boot="[0-9.]+-0"')
        self.assertEqual(self.restarts, [])
        self.clock.advance(RESTART_DELAY)
        self.assertEqual(self.restarts, ["restart"])

    @defer.inlineCallbacks
    def test_factory_defaults_need_confirmation(self) -> None:
        response, body = yield self.post("/system/factory-defaults", {})
        self.assertEqual(response.code, 400)
        self.assertIn("Tick the box to confirm.", body)
        self.clock.advance(RESTART_DELAY)
        self.assertEqual(self.restarts, [])
        response, body = yield self.post("/system/factory-defaults", {"confirm": "on"})
        self.assertEqual(response.code, 202)
        self.clock.advance(RESTART_DELAY)
        self.assertEqual(self.restarts, ["factory"])

    @defer.inlineCallbacks
    def test_software_update(self) -> None:
        wheel = make_wheel("0.2.0")
        response, body = yield self.post_multipart("/system/update", {"sha256": ""},
                                                   {"wheel": ("cmegw-0.2.0-py3-none-any.whl", wheel)})
        self.assertEqual(response.code, 202, body)
        self.assertIn("Installing 0.2.0", body)
        self.assertIn(hashlib.sha256(wheel).hexdigest(), body)
        pip = self.runner.calls[0]
        self.assertEqual(pip[1:8], ["-m", "pip", "install", "--no-deps", "--no-index", "--no-input",
                                    "--force-reinstall"])
        self.assertTrue(pip[-1].endswith("cmegw-0.2.0-py3-none-any.whl"))
        self.assertFalse(os.path.exists(pip[-1]), "the uploaded file is removed after the installation")
        self.assertEqual(self.restarted_process, [])
        self.clock.advance(RESTART_DELAY)
        self.assertEqual(self.restarted_process, [True])
        _, status = yield self.api("GET", "/api/update")
        self.assertEqual(status["phase"], "restarting")

    @defer.inlineCallbacks
    def test_software_update_refused(self) -> None:
        wheel = make_wheel("0.2.0")
        response, body = yield self.post_multipart("/system/update", {"sha256": "ab" * 32},
                                                   {"wheel": ("cmegw-0.2.0-py3-none-any.whl", wheel)})
        self.assertEqual(response.code, 400)
        self.assertIn("not the one given", body)
        self.assertIn(f"Still running {cmegw.__version__}", body)
        self.assertIn('value="' + "ab" * 32 + '"', body)
        response, body = yield self.post_multipart("/system/update", {}, {"wheel": ("other.whl", wheel)})
        self.assertEqual(response.code, 400)
        self.assertIn("is not named as a cmegw wheel", body)
        self.assertEqual(self.runner.calls, [])


class FailingPipTests(PagesTestBase):
    pip_code = 1

    @defer.inlineCallbacks
    def test_failure_keeps_the_running_version(self) -> None:
        self.runner.output = b"Processing x\nERROR: Could not install packages due to an OSError: disk full\n"
        response, _ = yield self.post_multipart("/system/update", {}, {"wheel": ("cmegw-0.2.0-py3-none-any.whl",
                                                                                 make_wheel("0.2.0"))})
        self.assertEqual(response.code, 202)
        self.clock.advance(10)
        self.assertEqual(self.restarted_process, [])
        _, body = yield self.get("/system")
        self.assertIn("Last update: failed.", body)
        self.assertIn("disk full", body)
        self.assertIn(f"still running {cmegw.__version__}", body)
        _, status = yield self.api("GET", "/api/status")
        self.assertEqual(status["update"]["phase"], "failed")


class VerifyWheelTests(unittest.TestCase):
    NAME = "cmegw-0.2.0-py3-none-any.whl"

    def test_good(self) -> None:
        data = make_wheel("0.2.0")
        info = verify_wheel(data, self.NAME, hashlib.sha256(data).hexdigest().upper())
        self.assertEqual((info.version, info.size), ("0.2.0", len(data)))

    def assertRefused(self, data: bytes, name: str, why: str, sha: str = "") -> None:
        with self.assertRaises(UpdateError) as caught:
            verify_wheel(data, name, sha)
        self.assertIn(why, str(caught.exception))

    def test_refused(self) -> None:
        self.assertRefused(b"", self.NAME, "empty")
        self.assertRefused(b"not a zip", self.NAME, "not a valid zip archive")
        self.assertRefused(make_wheel(), "cmegw-0.2.0.tar.gz", "not named as a cmegw wheel")
        self.assertRefused(make_wheel(), "evil-0.2.0-py3-none-any.whl", "not named as a cmegw wheel")
        self.assertRefused(make_wheel("0.2.0"), "cmegw-0.3.0-py3-none-any.whl", "has no cmegw-0.3.0.dist-info")
        self.assertRefused(make_wheel(metadata_version="0.9"), self.NAME, "metadata says version")
        self.assertRefused(make_wheel(tamper=True), self.NAME, "does not match its hash in RECORD")
        self.assertRefused(make_wheel(), self.NAME, "64 hexadecimal digits", sha="abc")
        self.assertRefused(make_wheel(), self.NAME, "not the one given", sha="0" * 64)

    def test_unlisted_file(self) -> None:
        out = io.BytesIO(make_wheel())
        with zipfile.ZipFile(out, "a") as z:
            z.writestr("cmegw/extra.py", b"x = 1\n")
        self.assertRefused(out.getvalue(), self.NAME, "cmegw/extra.py is in the archive but not in RECORD")

    def test_unsafe_path(self) -> None:
        out = io.BytesIO(make_wheel())
        with zipfile.ZipFile(out, "a") as z:
            z.writestr("../../etc/evil", b"x")
        self.assertRefused(out.getvalue(), self.NAME, "unsafe path")

    def test_pidfile_of(self) -> None:
        self.assertEqual(pidfile_of(["python", "-c", "twistd", "-n", "--pidfile=", "cmegw"]), None)
        self.assertEqual(pidfile_of(["twistd", "--pidfile", "/run/x.pid", "cmegw"]), "/run/x.pid")
        self.assertEqual(pidfile_of(["twistd", "cmegw"]), "twistd.pid")


class ApiTests(PagesTestBase):
    @defer.inlineCallbacks
    def test_status(self) -> None:
        response, status = yield self.api("GET", "/api/status")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"])
        self.assertEqual(status["software_version"], cmegw.__version__)
        self.assertRegex(status["uptime"], r"^\d+ days \d\d:\d\d:\d\d$")
        self.assertEqual(status["lines"]["1"]["settings"], "RS232, 2400, Even, 8, 1, None")
        self.assertEqual(status["tunnels"]["1"]["accept_mode"], "waiting")
        self.assertEqual(status["tunnels"]["1"]["connect_mode"], "disabled")
        self.assertEqual(status["indications"], {"PWR": True, "ERR": False, "LINK": False, "ACT": False})
        self.assertTrue(status["config_saved"])
        self.assertTrue(status["factory_password_in_use"])
        self.assertEqual(status["network"]["ip_address"], "127.0.0.5")

    @defer.inlineCallbacks
    def test_config_never_shows_hashes(self) -> None:
        response, body = yield self.api("GET", "/api/config")
        self.assertEqual(response.code, 200)
        text = json.dumps(body)
        self.assertNotIn("ha1", text)
        self.assertEqual(body["saved"]["auth"][0]["users"], ["admin"])
        self.assertEqual(body["saved"]["line"]["1"]["baud_rate"], 2400)

    @defer.inlineCallbacks
    def test_stats(self) -> None:
        _, body = yield self.api("GET", "/api/stats")
        self.assertIn("rx_bytes", body["lines"]["1"])
        self.assertEqual(body["tunnels"]["1"]["accept_connection_time_text"], "0 days 00:00:00")
        self.assertEqual(body["http"]["rx_bytes"], 1234)
        self.assertEqual(body["http"]["log_entries"], 1)

    @defer.inlineCallbacks
    def test_settings(self) -> None:
        _, body = yield self.api("GET", "/api/settings")
        self.assertEqual(body["line.1.baud_rate"], {"value": 2400, "running": 2400, "after_restart": False})
        self.assertTrue(body["network.dhcp"]["after_restart"])
        response, body = yield self.api("PUT", "/api/settings", {"line.1.baud_rate": 300, "network.dhcp": False})
        self.assertEqual(response.code, 200)
        self.assertEqual(body, {"changed": ["line.1.baud_rate", "network.dhcp"], "applied_now": ["line.1.baud_rate"],
                                "after_restart": ["network.dhcp"]})
        self.assertEqual(self.gateway.running_config.lines[1].baud_rate, 300)
        _, one = yield self.api("GET", "/api/settings/line.1.baud_rate")
        self.assertEqual(one["value"], 300)
        response, body = yield self.api("PUT", "/api/settings/tunnel.1.keepalive", {"value": "90"})
        self.assertEqual(body["applied_now"], ["tunnel.1.keepalive"])
        self.assertEqual(self.store.config.tunnels[1].keepalive, 90)

    @defer.inlineCallbacks
    def test_settings_all_or_nothing(self) -> None:
        response, body = yield self.api("POST", "/api/settings", {"line.1.baud_rate": 300,
                                                                   "network.hostname": "-bad"})
        self.assertEqual(response.code, 400)
        self.assertEqual(body["setting"], "network.hostname")
        self.assertEqual(body["value"], "-bad")
        self.assertIn("start with a letter", body["allowed"])
        self.assertIn("network.hostname", body["error"])
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)
        response, body = yield self.api("PUT", "/api/settings", {"no.such": 1})
        self.assertEqual(response.code, 400)
        self.assertEqual(body["setting"], "no.such")
        response, body = yield self.api("GET", "/api/settings/line.9.baud_rate")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_bad_bodies(self) -> None:
        response, body = yield self.api("PUT", "/api/settings", b"{not json")
        self.assertEqual(response.code, 400)
        self.assertIn("not valid JSON", body["error"])
        response, body = yield self.api("PUT", "/api/settings", [1, 2])
        self.assertEqual(response.code, 400)

    @defer.inlineCallbacks
    def test_cross_site_refused(self) -> None:
        """A browser form from another site cannot send JSON, nor pass the Origin check."""
        response, body = yield self.api("POST", "/api/settings", b'{"line.1.baud_rate": 300}',
                                        content_type=b"text/plain")
        self.assertEqual(response.code, 415)
        response, body = yield self.api("POST", "/api/restart", {}, content_type=b"application/x-www-form-urlencoded")
        self.assertEqual(response.code, 415)
        response, body = yield self.api("PUT", "/api/settings", {"line.1.baud_rate": 300},
                                        headers={b"origin": [b"http://evil.example"]})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_restart_and_factory_reset(self) -> None:
        calls: list[str] = []
        self.gateway.restart = lambda: calls.append("restart") or defer.succeed(None)  # type: ignore
        self.gateway.factory_reset = lambda: calls.append("factory") or defer.succeed(None)  # type: ignore
        response, body = yield self.api("POST", "/api/restart", {})
        self.assertEqual(response.code, 202)
        self.assertTrue(body["restarting"])
        self.clock.advance(RESTART_DELAY)
        self.assertEqual(calls, ["restart"])
        response, body = yield self.api("POST", "/api/factory-reset", {})
        self.assertEqual(response.code, 400)
        response, body = yield self.api("POST", "/api/factory-reset", {"confirm": True})
        self.assertEqual(response.code, 202)
        self.clock.advance(RESTART_DELAY)
        self.assertEqual(calls, ["restart", "factory"])

    @defer.inlineCallbacks
    def test_auth(self) -> None:
        response, body = yield self.api("POST", "/api/auth/users", {"uri": "/", "name": "ops", "password": "pw"})
        self.assertEqual(response.code, 200)
        self.assertEqual(body["directives"][0]["users"], ["admin", "ops"])
        self.assertNotIn("pw", json.dumps(body))
        response, body = yield self.api("POST", "/api/auth/directives", {"uri": "/api", "auth_type": "None"})
        self.assertEqual(response.code, 201)
        response, body = yield self.api("POST", "/api/auth/directives", {"uri": "nope"})
        self.assertEqual(response.code, 400)
        self.assertEqual(body["setting"], "auth.uri")
        response, body = yield self.api("PUT", "/api/auth/directives", {"uri": "/api", "auth_type": "Basic"})
        self.assertEqual(response.code, 400)
        response, body = yield self.api("DELETE", "/api/auth/directives?uri=/api")
        self.assertEqual(response.code, 200)
        response, body = yield self.api("DELETE", "/api/auth/users?uri=/&name=admin")
        self.assertEqual(response.code, 200)
        _, auth = yield self.api("GET", "/api/auth")
        self.assertEqual(auth["directives"][0]["users"], ["ops"])
        self.assertFalse(auth["factory_password_in_use"])

    @defer.inlineCallbacks
    def test_log_and_certificate(self) -> None:
        _, body = yield self.api("GET", "/api/http/log")
        self.assertEqual(len(body["entries"]), 1)
        response, body = yield self.api("DELETE", "/api/http/log")
        self.assertEqual(body, {"entries": [], "bytes": 0})
        _, body = yield self.api("GET", "/api/http/certificate")
        self.assertEqual(body["certificate"]["subject"], "CN=gw1")
        response, body = yield self.api("PUT", "/api/http/certificate", {"certificate": "x", "private_key": "y"})
        self.assertEqual(response.code, 400)
        self.assertIn("not PEM", body["error"])

    @defer.inlineCallbacks
    def test_update(self) -> None:
        wheel = make_wheel("0.3.0")
        response, body = yield self.api("POST", "/api/update", wheel, content_type=b"application/octet-stream",
                                        headers={b"x-filename": [b"cmegw-0.3.0-py3-none-any.whl"]})
        self.assertEqual(response.code, 202, body)
        self.assertEqual(body["installing"], "0.3.0")
        response, body = yield self.api("POST", "/api/update", b"junk", content_type=b"application/octet-stream",
                                        headers={b"x-filename": [b"cmegw-0.3.1-py3-none-any.whl"]})
        self.assertEqual(response.code, 400)

    @defer.inlineCallbacks
    def test_unknown_endpoint(self) -> None:
        response, body = yield self.api("GET", "/api/nothing")
        self.assertEqual(response.code, 404)
        self.assertEqual(body["error"], "no such endpoint")
        response, body = yield self.api("GET", "/api")
        self.assertIn("GET /api/status", body["endpoints"])


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

        from cmegw.web.pages import DATA_SUBDIR

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


class BuildDateTests(unittest.SynchronousTestCase):
    """The Status page's build date while a software update replaces the package files."""

    def setUp(self) -> None:
        from cmegw.web import pages_status

        self.pages_status = pages_status
        pages_status.build_date.cache_clear()
        self.addCleanup(pages_status.build_date.cache_clear)

    def test_read_once(self) -> None:
        """The files can vanish under a running gateway (pip replacing them): the date stays."""
        first = self.pages_status.build_date()
        self.assertRegex(first, r"^\d{4}-\d{2}-\d{2}$")
        self.patch(self.pages_status.cmegw, "__file__", "/nonexistent/cmegw/__init__.py")
        self.assertEqual(self.pages_status.build_date(), first)

    def test_missing_files(self) -> None:
        """Package files that cannot be read give "unknown", not an error page."""
        self.patch(self.pages_status.cmegw, "__file__", "/nonexistent/cmegw/__init__.py")
        self.assertEqual(self.pages_status.build_date(), "unknown")
