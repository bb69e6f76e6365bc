"""
Tests for `cmegw.web.pages.system`: restart, factory defaults and the
software update (a wheel verified, then installed by pip).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

from twisted.internet import defer
from twisted.trial import unittest

import cmegw
from cmegw.web.pages.system import RESTART_DELAY, UpdateError
from cmegw.web.pages.system_update import pidfile_of, verify_wheel
from tests.web_helpers import PagesTestBase, make_wheel


class SystemPageTests(PagesTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.gateway.restart = lambda: self.restarts.append("restart") or defer.succeed(None)  # type: ignore
        self.gateway.factory_reset = lambda: self.restarts.append("factory") or defer.succeed(None)  # type: ignore

    @defer.inlineCallbacks
    def test_restart_answers_first(self) -> None:
        response, body = yield self.post("/system/restart", {})
        self.assertEqual((response.previousResponse.code, response.code), (303, 200))
        self.assertIn(b"/system/restarting?kind=restart&boot=", response.request.absoluteURI)
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
        self.assertEqual((response.previousResponse.code, response.code), (303, 200))
        self.assertIn("Restoring factory defaults", body)
        self.clock.advance(RESTART_DELAY)
        self.assertEqual(self.restarts, ["factory"])

    @defer.inlineCallbacks
    def test_software_update(self) -> None:
        wheel = make_wheel("0.2.0")
        response, body = yield self.post_multipart("/system/update", {"sha256": ""},
                                                   {"wheel": ("cmegw-0.2.0-py3-none-any.whl", wheel)})
        self.assertEqual((response.previousResponse.code, response.code), (303, 200), body)
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
        _, page = yield self.get("/system")
        self.assertIn('http-equiv="refresh" content="5"', page, "the page follows the update")
        response, page = yield self.post_multipart("/system/update", {"sha256": ""},
                                                   {"wheel": ("cmegw-0.2.0-py3-none-any.whl", wheel)})
        self.assertEqual(response.code, 400)
        self.assertIn("already restarting", page)
        self.assertNotIn('http-equiv="refresh"', page, "a refused upload's page never sends it again by itself")

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
        self.assertEqual(response.code, 200)
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
