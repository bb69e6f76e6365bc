"""
Tests for `cmegw.web.pages.http`: the HTTP page (statistics, log,
configuration, certificate) and its authentication directives and users.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.web.resource import Resource

from cmegw.config.model import ConfigError
from cmegw.web.accesslog import AccessRecord
from cmegw.web.auth import set_authenticated_user
from cmegw.web.pages import http as pages_http
from tests.web_helpers import BASE, PagesTestBase


class HttpPageTests(PagesTestBase):
    FORM = {"_group": "http", "http.enabled": "on", "http.http_port": "8080", "http.https_port": "8443",
            "http.interface": "", "http.max_timeout": "10", "http.max_bytes": "40960", "http.logging": "on",
            "http.max_log_entries": "50", "http.log_format": "%h %t \"%r\" %s"}

    @defer.inlineCallbacks
    def test_configuration(self) -> None:
        response, body = yield self.post("/http/configuration", dict(self.FORM, **{"http.max_bytes": "10"}))
        self.assertEqual(response.code, 400)
        self.assertIn("Max bytes: 10 is not allowed", body)
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
        self.assertEqual((response.previousResponse.code, response.code), (303, 200), "post/redirect/get")
        self.assertEqual(self.web.installed, [(cert, key)])
        self.assertIn("CN=new", body)


class StatisticsPageTests(PagesTestBase):
    @defer.inlineCallbacks
    def test_sizes_and_other_answers(self) -> None:
        self.web.stats.rx_bytes = 1_234_567
        self.web.stats.status_unknown = 5
        self.web.stats.by_status = {200: 7, 303: 4, 405: 1}
        _, body = yield self.get("/http")
        self.assertIn('<span title="1\u202f234\u202f567 bytes" class="bytes">1.23 MB</span>', body)
        self.assertIn("(303 See Other: 4, 405 Method Not Allowed: 1)", body, "each other status said")
        self.assertIn(">413 Request Entity Too Large</th>", body)
        self.assertNotIn("Status unknown", body)
        self.assertNotIn("Memory error", body, "a counter that is always 0 is not shown")


class LogPageTests(PagesTestBase):
    def setUp(self) -> None:
        super().setUp()
        log = self.web.access_log
        log.clear()
        for n in range(300):
            path = "/static/cmegw.css" if n % 3 == 0 else f"/page/{n}"
            status = 401 if n % 5 == 0 else 200
            record = AccessRecord(path=path.encode(), status=status, time=1_800_000_000.0 + n)
            log.add(f'127.0.0.1 "GET {path} HTTP/1.1" {status} ' + "x" * 150, record)

    @defer.inlineCallbacks
    def test_filter_search_paging(self) -> None:
        _, body = yield self.get("/http/log")
        self.assertIn("GET /page/299 HTTP/1.1", body, "the newest first")
        self.assertIn("x" * 150, body, "whole lines")
        self.assertNotIn("/static/cmegw.css", body.split('id="access-log"')[1].split("Download")[0],
                         "static files hidden by default")
        self.assertNotIn("GET /page/125 ", body, "401 answers hidden by default")
        self.assertIn("hidden by the filter", body)
        self.assertIn('href="/http/log?page=2"', body)
        _, body = yield self.get("/http/log?static=on&unauthorized=on&page=3")
        self.assertIn("Page 3 of 3", body)
        self.assertIn("GET /page/1 HTTP/1.1", body)
        _, body = yield self.get("/http/log?q=PAGE/12")
        self.assertIn("GET /page/128 HTTP/1.1", body)
        self.assertNotIn("GET /page/13 HTTP/1.1", body)

    @defer.inlineCallbacks
    def test_download(self) -> None:
        response, text = yield self.get("/http/log.txt?static=on&unauthorized=on")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
        lines = text.splitlines()
        self.assertEqual(len(lines), 300, "every line, not one page")
        self.assertTrue(lines[0].startswith('127.0.0.1 "GET /static/cmegw.css'), "oldest first")
        _, text = yield self.get("/http/log.txt")
        self.assertEqual(len(text.splitlines()), 300 - 100 - 60 + 20, "the filter applies")
class AsUser(Resource):
    """The admin pages as the authentication gate hands them a request signed in as `name`."""

    def __init__(self, name: str, pages: Any) -> None:
        super().__init__()
        self.name, self.pages = name, pages

    isLeaf = True

    def render(self, request: Any) -> Any:
        set_authenticated_user(request, self.name)
        return self.pages.render(request)


class PasswordChangeTests(PagesTestBase):
    """Changing a password as a field engineer does: from the banner's link, in words, signed in again."""

    @defer.inlineCallbacks
    def test_banner_link_opens_the_form_with_the_name(self) -> None:
        _, status = yield self.get("/status")
        link = re.search(r'<a href="([^"]+)">change the password</a>', status).group(1)
        self.assertEqual(link, "/http/authentication?user=admin&amp;uri=%2F#users")
        _, page = yield self.get(html.unescape(link).split("#")[0])
        self.assertIn('<details open="open"><summary>Add a user or change a password</summary>', page)
        self.assertIn('id="f-name" name="name"', page)
        self.assertRegex(page, r'<input type="text" value="admin" spellcheck="false" id="f-name"')
        _, plain = yield self.get("/http/authentication")
        self.assertNotIn('<details open="open">', plain)
        self.assertIn('href="/http/authentication?user=admin&amp;uri=%2F#users" class="button link">change password</a>', plain)

    @defer.inlineCallbacks
    def test_mismatch_and_weak_passwords_say_so_in_words(self) -> None:
        response, body = yield self.post("/http/authentication/user",
                                         {"uri": "/", "name": "admin", "password": "n3w-pass", "confirm": "n3w-pas"})
        self.assertEqual(response.code, 400)
        self.assertIn('<p id="f-confirm-error" class="field-error" role="alert">The two passwords differ: '
                      'type the same password twice.</p>', body)
        self.assertIn('<details open="open">', body)
        for word in ("auth.user.password", "(hidden)", "n3w-pass"):
            self.assertNotIn(word, body)
        response, body = yield self.post("/http/authentication/user",
                                         {"uri": "/", "name": "admin", "password": "admin", "confirm": "admin"})
        self.assertEqual(response.code, 400)
        self.assertIn('<p id="f-password-error" class="field-error" role="alert">Password: this password is the '
                      'first one anyone tries', html.unescape(body))
        response, body = yield self.post("/http/authentication/user",
                                         {"uri": "/", "name": "admin", "password": "", "confirm": ""})
        self.assertIn("Type the new password.", body)
        self.assertTrue(self.store.config.auth[0].users[0].check_password("config", "admin"), "nothing changed")

    @defer.inlineCallbacks
    def test_own_password_change_offers_to_sign_in_again(self) -> None:
        self.http = StubTreq(AsUser("admin", self.resource))
        response, body = yield self.post("/http/authentication/user",
                                         {"uri": "/", "name": "admin", "password": "n3w-pass", "confirm": "n3w-pass"})
        self.assertEqual(response.code, 200)
        self.assertIn("Your password was changed.", body)
        self.assertIn('<a href="/logout">sign in with the new password</a>', body)
        self.assertIn('signed in as admin · <a href="/logout">Sign out</a>', body)
        response, body = yield self.post("/http/authentication/user",
                                         {"uri": "/", "name": "bob", "password": "b0b-pass", "confirm": "b0b-pass"})
        self.assertIn("User bob of / saved.", body)
        self.assertNotIn("Your password was changed.", body)


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
        config = self.store.config
        response, body = yield self.post("/http/authentication/directive/type", {"uri": "/api", "auth_type": "Digest"})
        self.assertEqual((response.previousResponse.code, response.code), (303, 200))
        self.assertIn("Directive /api uses Digest already: nothing changed.", body)
        self.assertNotIn("nothing changed. Applies at once", body)
        ids = re.findall(r' id="([^"]+)"', body)
        self.assertEqual(sorted(i for i in set(ids) if ids.count(i) > 1), [], "each field's label finds its own")
        self.assertIn('<label for="f-directive1-password">', body)
        self.assertIs(self.store.config, config, "nothing saved")
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
