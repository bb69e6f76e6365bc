"""
Tests for `cmegw.web.pages.forms`: the CSRF token of every form, and
post/redirect/get (a form that succeeded sends the browser to a page).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet import defer

from cmegw.web.app import build_app
from cmegw.web.pages.admin import Admin
from cmegw.web.pages.forms import LIVE_HEADER, Flash
from cmegw.web.pages.widgets import Notice
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


class PostRedirectGetTests(PagesTestBase):
    @defer.inlineCallbacks
    def send(self, path: str, fields: dict[str, str]) -> Any:
        """POST a form without following the answer's redirect."""
        token = yield self.token()
        response = yield self.http.post(BASE + path, data=urlencode({**fields, "_csrf": token}).encode(),
                                        headers={b"content-type": [b"application/x-www-form-urlencoded"]},
                                        allow_redirects=False)
        body = yield response.text()
        return response, body

    @defer.inlineCallbacks
    def test_saved_form_redirects_to_its_page(self) -> None:
        response, _ = yield self.send("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"})
        self.assertEqual(response.code, 303)
        self.assertEqual(response.headers.getRawHeaders(b"location"), [b"/serial/configuration#line-1"])
        self.assertEqual(self.store.config.lines[1].baud_rate, 300)
        live, body = yield self.get("/serial/configuration", headers={LIVE_HEADER: [b"1"]})
        self.assertNotIn("Applied at once", body, "a live update does not take the notice")
        _, body = yield self.get("/serial/configuration")
        self.assertIn("Applied at once", body)
        _, body = yield self.get("/serial/configuration")
        self.assertNotIn("Applied at once", body, "a reload shows the page, not the notice again")

    @defer.inlineCallbacks
    def test_wrong_value_stays_in_its_field(self) -> None:
        response, body = yield self.send("/serial/configuration", {"_group": "1", "line.1.baud_rate": "1234"})
        self.assertEqual(response.code, 400)
        self.assertIn("1234 is not allowed", body)
        self.assertIsNone(response.headers.getRawHeaders(b"location"))

    @defer.inlineCallbacks
    def test_each_kind_of_form_redirects(self) -> None:
        """Actions and uploads redirect too, to the page that shows their result."""
        for path, fields, target in (
                ("/http/log/clear", {}, b"/http"),
                ("/http/log/clear", {"back": "/http/log"}, b"/http/log"),
                ("/http/authentication/user", {"uri": "/", "name": "bob", "password": "pw", "confirm": "pw"},
                 b"/http/authentication"),
                ("/tcpip/disconnect", {"_group": "1", "tunnel.1.disconnect_timeout": "30"},
                 b"/tcpip/disconnect#tunnel-1"),
                ("/system/restart", {}, b"/system/restarting?kind=restart&boot=")):
            response, _ = yield self.send(path, fields)
            self.assertEqual(response.code, 303, path)
            self.assertTrue(response.headers.getRawHeaders(b"location")[0].startswith(target), path)
        _, body = yield self.get("/http/authentication")
        self.assertIn("User bob of / saved.", body)

    @defer.inlineCallbacks
    def test_bookmark_of_a_form_address_goes_to_its_page(self) -> None:
        for path, page in (("/meters/scan", b"/meters"), ("/http/log/clear", b"/http/log"),
                           ("/system/restart", b"/system"), ("/tcpip/accept", None)):
            response = yield self.http.get(BASE + path, allow_redirects=False)
            if page is None:
                self.assertEqual(response.code, 200, path)
                continue
            self.assertEqual((response.code, response.headers.getRawHeaders(b"location")), (303, [page]), path)
        response = yield self.http.get(BASE + "/api/meters/1/read", allow_redirects=False)
        self.assertEqual(response.code, 405, "the API says what it says")

    def test_flash_is_bounded(self) -> None:
        flash = Flash(limit=3)
        for n in range(5):
            flash.put(f"session{n}", "/status", Notice("ok", str(n)))
        self.assertEqual(len(flash), 3)
        self.assertIsNone(flash.take("session0", "/status"), "the oldest went first")
        self.assertEqual(flash.take("session4", "/status"), Notice("ok", "4"))
        self.assertIsNone(flash.take("session4", "/status"), "read once")
        self.assertIsNone(flash.take("session3", "/other"), "for its page only")
