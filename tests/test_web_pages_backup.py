"""
Tests for `cmegw.web.pages.backup`: the System section's configuration
backup (download without secrets, upload checked and saved as any change)
and ``GET``/``PUT /api/config/file``.
"""

from __future__ import annotations

import tomllib

import attrs
from twisted.internet import defer

from cmegw.config import auth as config_auth
from tests.web_helpers import PagesTestBase


class BackupPageTests(PagesTestBase):
    def setUp(self) -> None:
        super().setUp()
        config = self.store.config
        config = config.evolve(mqtt=attrs.evolve(config.mqtt, url="mqtt://127.0.0.1:1883", password="mqtt-secret"))
        self.store.change(config_auth.add_user(config, "/", "ops", "ops-password"))
        self.saves = self.store.saves

    @defer.inlineCallbacks
    def download(self) -> defer.Deferred:
        response, body = yield self.get("/system/configuration/cmegw.toml")
        self.assertEqual(response.code, 200)
        return response, body

    @defer.inlineCallbacks
    def test_page_says_what_is_left_out(self) -> None:
        response, body = yield self.get("/system/configuration")
        self.assertEqual(response.code, 200)
        self.assertIn("Secrets are left out", body)
        self.assertIn("mqtt.password", body)
        self.assertIn('href="/system/configuration/cmegw.toml"', body)
        self.assertIn('enctype="multipart/form-data"', body)
        self.assertIn('aria-current="page" class="active">Configuration backup', body)
        _, system = yield self.get("/system")
        self.assertIn('href="/system/configuration"', system)

    @defer.inlineCallbacks
    def test_download_has_no_secrets(self) -> None:
        response, body = yield self.download()
        self.assertIn("attachment", response.headers.getRawHeaders("content-disposition")[0])
        self.assertIn(".toml", response.headers.getRawHeaders("content-disposition")[0])
        self.assertIn("no-store", response.headers.getRawHeaders("cache-control")[0])
        self.assertTrue(body.startswith("# cmegw configuration backup"))
        self.assertNotIn("mqtt-secret", body)
        for user in self.store.config.auth[0].users:
            self.assertNotIn(user.ha1_md5, body)
            self.assertNotIn(user.ha1_sha256, body)
        self.assertEqual(tomllib.loads(body)["mqtt"]["url"], "mqtt://127.0.0.1:1883")

    @defer.inlineCallbacks
    def test_upload_applies_and_keeps_secrets(self) -> None:
        _, text = yield self.download()
        changed = text.replace("baud_rate = 2400", "baud_rate = 9600")
        response, body = yield self.post_multipart("/system/configuration", {},
                                                   {"file": ("backup.toml", changed.encode())})
        self.assertEqual((response.previousResponse.code, response.code), (303, 200), "post/redirect/get")
        self.assertEqual(response.previousResponse.headers.getRawHeaders(b"location"), [b"/system/configuration"])
        self.assertIn("Restored from backup.toml and saved", body)
        self.assertIn("line.1.baud_rate", body)
        self.assertIn("Kept this gateway&#x27;s: mqtt.password", body.replace("'", "&#x27;"))
        self.assertEqual(self.store.config.lines[1].baud_rate, 9600)
        self.assertEqual(self.store.config.mqtt.password, "mqtt-secret")
        self.assertEqual([u.name for u in self.store.config.auth[0].users], ["admin", "ops"])
        self.assertEqual(self.store.saves, self.saves + 1)

    @defer.inlineCallbacks
    def test_bad_upload_changes_nothing(self) -> None:
        _, text = yield self.download()
        before = self.store.config
        bad = text.replace("baud_rate = 2400", "baud_rate = 1234")
        line = bad.splitlines().index("baud_rate = 1234") + 1
        for data, said in ((bad.encode(), "setting line.1.baud_rate: Baud rate of line 1: 1234 is not allowed"),
                           (bad.encode(), f"backup.toml, line {line}: setting line.1.baud_rate"),
                           (text[:text.index("[tunnel.1]")].encode(), "is incomplete"),
                           (b"baud_rate = ", "is not valid TOML"),
                           (b"\xff\xfe", "not UTF-8"), (b"", "choose the configuration file")):
            response, body = yield self.post_multipart("/system/configuration", {},
                                                       {"file": ("backup.toml" if data else "", data)})
            self.assertEqual(response.code, 400, said)
            self.assertIn("Nothing was changed", body)
            self.assertIn(said, body)
        self.assertEqual(self.store.config, before)
        self.assertEqual(self.store.saves, self.saves)

    @defer.inlineCallbacks
    def test_upload_of_the_same_file_changes_nothing(self) -> None:
        _, text = yield self.download()
        response, body = yield self.post_multipart("/system/configuration", {},
                                                   {"file": ("same.toml", text.encode())})
        self.assertEqual((response.previousResponse.code, response.code), (303, 200))
        self.assertIn("nothing changed", body)
        self.assertEqual(self.store.saves, self.saves)

    @defer.inlineCallbacks
    def test_upload_needs_the_csrf_token(self) -> None:
        from tests.web_helpers import BASE, multipart

        _, text = yield self.download()
        data, ctype = multipart({}, {"file": ("x.toml", text.replace("2400", "9600").encode())})
        response = yield self.http.post(BASE + "/system/configuration", data=data, headers={b"content-type": [ctype]})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_api(self) -> None:
        response, text = yield self.api("GET", "/api/config/file")
        self.assertEqual(response.code, 200)
        self.assertNotIn("mqtt-secret", text)
        response, answer = yield self.api("PUT", "/api/config/file", text.replace("keepalive = 45", "keepalive = 60")
                                          .encode(), content_type=b"application/toml")
        self.assertEqual(response.code, 200, answer)
        self.assertEqual(answer["changed"], ["tunnel.1.keepalive"])
        self.assertIn("mqtt.password", answer["kept"])
        self.assertEqual(self.store.config.tunnels[1].keepalive, 60)
        response, answer = yield self.api("PUT", "/api/config/file", text.replace("keepalive = 45", "keepalive = -1")
                                          .encode(), content_type=b"application/toml")
        self.assertEqual(response.code, 400)
        self.assertEqual(answer.get("setting"), "tunnel.1.keepalive", answer)
        self.assertIn(", line ", answer["error"])
        self.assertEqual(self.store.config.tunnels[1].keepalive, 60)
        response, answer = yield self.api("POST", "/api/config/file", text.encode(),
                                          content_type=b"application/x-www-form-urlencoded")
        self.assertEqual(response.code, 415)
