"""
Tests for `cmegw.web.pages.http`: the HTTP page (statistics, log,
configuration, certificate) and its authentication directives and users.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twisted.internet import defer

from cmegw.config.model import ConfigError
from cmegw.web.accesslog import AccessRecord
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


class StatisticsPageTests(PagesTestBase):
    @defer.inlineCallbacks
    def test_sizes_and_other_answers(self) -> None:
        self.web.stats.rx_bytes = 1_234_567
        self.web.stats.status_unknown = 5
        self.web.stats.by_status = {200: 7, 303: 4, 405: 1}
        _, body = yield self.get("/http")
        self.assertIn('<span title="1\u202f234\u202f567 bytes" class="bytes">1.23 MB</span>', body)
        self.assertIn("(303 See Other: 4, 405 Method Not Allowed: 1)", body, "each other status said")
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
