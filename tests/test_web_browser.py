"""
End to end: a real ``twistd cmegw`` process on loopback ports and a pty,
driven by headless Chromium (Debian's ``chromium`` through Playwright from
PyPI).  Logs in with Digest admin/admin, changes the baud rate on the M-Bus
Serial page, sees it on the Status page and in the file, restarts from the
System page and is brought back to the Status page; a saved form leaves the
address bar on its page (post/redirect/get) and a reload does not post it
again; counters update without a reload; the access log's filter.  Saves
screenshots of the pages as artefacts in the test's folder (under _trial_temp).
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.support import GatewayProcess, free_port, open_pty

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: The longest one browser step waits (milliseconds).
STEP_TIMEOUT = 30_000


def _playwright() -> Any:
    if not os.path.exists(CHROMIUM):
        raise unittest.SkipTest(f"{CHROMIUM} is absent (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise unittest.SkipTest("playwright is not installed (pip install playwright)") from None
    return sync_playwright


def launch_chromium(testcase: unittest.TestCase, sync_playwright: Any) -> Any:
    """Headless Chromium under Playwright, closed and stopped at the end of `testcase`."""
    playwright = sync_playwright().start()
    testcase.addCleanup(playwright.stop)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    testcase.addCleanup(browser.close)
    return browser


class BrowserTests(unittest.TestCase):
    def setUp(self) -> None:
        sync_playwright = _playwright()
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir(parents=True)
        master, slave, device = open_pty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        self.http = free_port()
        loopback = ":interface=127.0.0.1"
        self.gateway = GatewayProcess(self.folder / "gw", [
            "--http", f"tcp:{self.http}{loopback}", "--https", f"tcp:{free_port()}{loopback}",
            "--console", f"tcp:{free_port()}{loopback}", "--tunnel", f"tcp:{free_port()}{loopback}",
            "--device", device, "--config", str(self.folder / "gw" / "cmegw.toml")])
        self.addCleanup(self.gateway.stop)
        self.gateway.start(wait_ports=[self.http])
        self.browser = launch_chromium(self, sync_playwright)
        self.context = self.browser.new_context(http_credentials={"username": "admin", "password": "admin"},
                                                viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(STEP_TIMEOUT)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def screenshot(self, name: str) -> Path:
        path = self.folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def test_change_baud_rate_and_see_it_on_status(self) -> None:
        page = self.page
        response = page.goto(self.url("/status"))
        self.assertEqual(response.status, 200, self.gateway.log())
        self.assertIn("RS232, 2400, Even, 8, 1, None", page.content())
        self.assertIn("The factory password is in use", page.content())

        page.goto(self.url("/serial/configuration"))
        page.select_option("#f-line-1-baud-rate", "300")
        page.click("#line-1 button[type=submit]")
        page.wait_for_selector(".notice-ok")
        self.assertIn("Applied at once", page.inner_text(".notice-ok"))
        self.screenshot("serial-configuration")

        page.goto(self.url("/status"))
        self.assertIn("RS232, 300, Even, 8, 1, None", page.content())
        shot = self.screenshot("status")
        self.assertGreater(shot.stat().st_size, 10_000)
        saved = tomllib.loads((self.folder / "gw" / "cmegw.toml").read_text())
        self.assertEqual(saved["line"]["1"]["baud_rate"], 300)

        page.goto(self.url("/serial/configuration"))
        page.evaluate("document.querySelector('#f-line-1-baud-rate').innerHTML += "
                      "'<option value=\"1234\">1234</option>'")
        page.select_option("#f-line-1-baud-rate", "1234")
        page.click("#line-1 button[type=submit]")
        page.wait_for_selector(".field-error")
        self.assertIn("Baud rate of line 1: 1234 is not allowed", page.inner_text(".field-error"))

    def test_every_page_with_the_real_web_part(self) -> None:
        """The pages read the real web part's statistics, log and certificate."""
        page = self.page
        for path, text in (("/network", "After restart"), ("/network/interface", "DHCP client"),
                           ("/network/link", "Link status"), ("/tcpip", "Completed accepts"),
                           ("/tcpip/accept", "TCP keep-alive"), ("/tcpip/disconnect", "Disconnect timeout"),
                           ("/serial", "Receiver bytes"), ("/http", "401 Unauthorized"),
                           ("/http/log", "GET /network HTTP/1.1"), ("/http/configuration", "Max bytes"),
                           ("/http/authentication", "Directive /"), ("/http/certificate", "SHA-256 fingerprint"),
                           ("/system", "Software update"), ("/api/status", '"software_version"')):
            response = page.goto(self.url(path))
            self.assertEqual(response.status, 200, path)
            self.assertIn(text, page.content(), path)
        page.goto(self.url("/http"))
        self.screenshot("http")

    def test_restart_returns_to_status(self) -> None:
        page = self.page
        page.goto(self.url("/status"))
        before = page.inner_text("#uptime")
        page.goto(self.url("/system"))
        page.click("#restart button[type=submit]")
        page.wait_for_selector("#restart .spinner")
        self.screenshot("restarting")
        page.wait_for_url(self.url("/status"), timeout=STEP_TIMEOUT)
        page.wait_for_selector("#uptime")
        self.assertIn("Restarted", self.gateway.log())
        self.assertTrue(before)
        self.screenshot("status-after-restart")

    def test_form_redirects_and_reload_does_not_post(self) -> None:
        """Post/redirect/get: after a save the address bar shows the page, and a reload only reads it."""
        page = self.page
        sent: list[tuple[str, str]] = []
        page.on("request", lambda request: sent.append((request.method, request.url)))
        page.goto(self.url("/serial/configuration"))
        page.select_option("#f-line-1-baud-rate", "300")
        page.click("#line-1 button[type=submit]")
        page.wait_for_selector(".notice-ok")
        self.assertEqual(page.url, self.url("/serial/configuration#line-1"))
        self.assertIn(("POST", self.url("/serial/configuration")), sent)
        for size, name in (((1366, 900), "desktop"), ((390, 844), "phone")):
            page.set_viewport_size({"width": size[0], "height": size[1]})
            self.screenshot(f"saved-{name}")
        del sent[:]
        response = page.reload()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.request.method, "GET")
        self.assertNotIn("POST", [method for method, _ in sent], "a reload does not send the form again")
        self.assertEqual(page.locator(".notice-ok").count(), 0, "the notice was shown once")
        self.assertEqual(page.input_value("#f-line-1-baud-rate"), "300")

    def test_counters_update_without_reload(self) -> None:
        page = self.page
        page.goto(self.url("/http"))
        page.evaluate("window.cmegwDrawnOnce = true")
        before = page.inner_text("#http-statistics")
        page.wait_for_function("before => document.getElementById('http-statistics').innerText !== before",
                               arg=before, timeout=STEP_TIMEOUT)
        self.assertTrue(page.evaluate("window.cmegwDrawnOnce === true"), "the page was not loaded again")
        self.assertIn("Live: updated at", page.inner_text("#drawn-at"))
        page.goto(self.url("/status"))
        uptime = page.inner_text("#uptime")
        page.wait_for_function("before => document.getElementById('uptime').innerText !== before",
                               arg=uptime, timeout=STEP_TIMEOUT)
        for size, name in (((1366, 900), "desktop"), ((390, 844), "phone")):
            page.set_viewport_size({"width": size[0], "height": size[1]})
            self.screenshot(f"status-live-{name}")
        page.goto(self.url("/http/log"))
        self.assertNotIn("/static/cmegw.css", page.inner_text(".log-lines"), "static files hidden by default")
        page.check("input[name=static]")
        page.click(".log-filter button[type=submit]")
        page.wait_for_url("**/http/log?**static=on**")
        self.assertIn("/static/cmegw.css", page.inner_text(".log-lines"))
        self.screenshot("log")

    def test_change_password_and_sign_out(self) -> None:
        """From the banner's link to the new password, at desktop and phone sizes; then sign out and in again."""
        page = self.page
        statics: list[tuple[str, int]] = []
        page.on("response", lambda r: statics.append((r.url, r.status)) if "/static/" in r.url else None)
        page.goto(self.url("/status"))
        page.click("a:has-text('change the password')")
        page.wait_for_selector("#users details[open]")
        self.assertEqual(page.input_value("#users #f-name"), "admin")
        form = "#users form[action='/http/authentication/user']"

        def send(password: str, confirm: str) -> None:
            page.fill(f"{form} #f-password", password)
            page.fill(f"{form} #f-confirm", confirm)
            page.click(f"{form} button[type=submit]")
            page.wait_for_load_state()

        send("n3w-Passw0rd", "n3w-Passw0rd!")
        self.assertIn("The two passwords differ", page.inner_text("#f-confirm-error"))
        self.assertNotIn("auth.user.password", page.content())
        self.assertEqual(page.input_value("#users #f-name"), "admin")
        boxes = [page.locator(f"{form} #{name}").bounding_box() for name in ("f-name", "f-password", "f-confirm")]
        self.screenshot("password-mismatch")
        rows: dict[float, list[float]] = {}
        for box in boxes:
            rows.setdefault(box["y"], []).append(box["x"])
        one_column = len({round(box["x"]) for box in boxes}) == 1
        self.assertTrue(len(rows) <= 2 or one_column, f"the inputs keep the grid's rows or its column: {boxes}")
        self.assertTrue(all(len(set(xs)) == len(xs) for xs in rows.values()), boxes)
        columns = {round(box["x"]) for box in boxes}
        self.assertLessEqual(len(columns), 3, boxes)
        self.assertEqual(len({round(box["height"]) for box in boxes}), 1, f"the inputs keep their height: {boxes}")
        send("admin", "admin")
        self.assertIn("the first one anyone tries", page.inner_text("#f-password-error"))

        send("n3w-Passw0rd", "n3w-Passw0rd")
        self.assertIn("Your password was changed", page.inner_text(".notice-ok"))
        rules = page.evaluate("Array.from(document.styleSheets).reduce((n, s) => n + s.cssRules.length, 0)")
        self.assertGreater(rules, 10, "the result page has its stylesheet")
        self.assertTrue(statics and all(status in (200, 304) for _url, status in statics), statics)
        self.screenshot("password-changed")
        page.set_viewport_size({"width": 390, "height": 844})
        self.screenshot("password-changed-phone")
        self.assertEqual(page.goto(self.url("/status")).status, 401, "the old password no longer signs in")

        fresh = self.browser.new_context(http_credentials={"username": "admin", "password": "n3w-Passw0rd"},
                                         viewport={"width": 1366, "height": 900})
        self.addCleanup(fresh.close)
        signed_in = fresh.new_page()
        signed_in.set_default_timeout(STEP_TIMEOUT)
        self.assertEqual(signed_in.goto(self.url("/status")).status, 200)
        self.assertNotIn("The factory password is in use", signed_in.content())
        answers: list[tuple[str, int]] = []
        signed_in.on("response", lambda r: answers.append((r.url, r.status)))
        signed_in.click("a:has-text('Sign out')")
        signed_in.wait_for_url(self.url("/status"))
        # Playwright answers the browser's password prompt at once, as a person typing it again would, so
        # the 401 that told the browser to forget the password shows in the gateway's access log only.
        self.assertIn(303, [status for url, status in answers if "/logout?signed-out=" in url], answers)
        signed_in.goto(self.url("/http/log?unauthorized=on"))
        self.assertRegex(signed_in.inner_text(".log-lines"), r'"GET /logout\?signed-out=\S+ HTTP/1.1" 401 ')

        # A person who cancels the password prompt sees the 401's page. Headless Chromium has no prompt to
        # cancel (it fails the navigation), so Playwright fetches the page and hands it to the browser as is.
        anonymous = self.browser.new_context(viewport={"width": 390, "height": 844})
        self.addCleanup(anonymous.close)
        out = anonymous.new_page()
        out.set_default_timeout(STEP_TIMEOUT)
        out.route("**/logout*", lambda route: route.fulfill(response=route.fetch(max_redirects=5)))
        self.assertEqual(out.goto(self.url("/logout")).status, 401)
        self.assertIn("Signed out", out.inner_text("h1"))
        self.assertEqual(out.get_attribute("a.button", "href"), "/status")
        self.page = out
        self.screenshot("signed-out-phone")

    def tearDown(self) -> None:
        artefacts = Path("browser-artefacts")
        artefacts.mkdir(exist_ok=True)
        for png in self.folder.glob("*.png"):
            shutil.copy(png, artefacts / f"{self._testMethodName}-{png.name}")
