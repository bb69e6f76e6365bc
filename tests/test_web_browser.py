"""
End to end: a real ``twistd cmegw`` process on loopback ports and a pty,
driven by headless Chromium (Debian's ``chromium`` through Playwright from
PyPI).  Logs in with Digest admin/admin, changes the baud rate on the M-Bus
Serial page, sees it on the Status page and in the file, restarts from the
System page and is brought back to the Status page.  Saves screenshots of the
pages as artefacts in the test's folder (under _trial_temp).
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
        self.assertIn("line.1.baud_rate: 1234 is not allowed", page.inner_text(".field-error"))

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

    def tearDown(self) -> None:
        artefacts = Path("browser-artefacts")
        artefacts.mkdir(exist_ok=True)
        for png in self.folder.glob("*.png"):
            shutil.copy(png, artefacts / f"{self._testMethodName}-{png.name}")
