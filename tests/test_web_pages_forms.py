"""
Tests for `cmegw.web.pages.forms`: the CSRF token of every form.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet import defer

from cmegw.web.app import build_app
from cmegw.web.pages.admin import Admin
from tests.web_helpers import BASE, HOST, PagesTestBase


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
