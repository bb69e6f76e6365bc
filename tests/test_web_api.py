"""
Tests for `cmegw.web.api`: the JSON API under ``/api``, through `treq.testing.StubTreq`.
"""

from __future__ import annotations

import json

from twisted.internet import defer

import cmegw
from cmegw.web.pages.system import RESTART_DELAY
from tests.web_helpers import PagesTestBase, make_wheel


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
        self.assertEqual(body["label"], "Host name")
        self.assertEqual(body["value"], "-bad")
        self.assertIn("start with a letter", body["allowed"])
        self.assertTrue(body["error"].startswith("Host name: '-bad' is not allowed"), body["error"])
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
