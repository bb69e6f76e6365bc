"""
End to end: readings as a person reads a meter, in headless Chromium (as
tests/test_web_browser.py drives it) against a real ``twistd cmegw
--simulate``: a meter read from the Meters page and a meter added to the
list, read now (the page follows the read by itself; a reload never sends
the form again), with its chart, at a desktop's 1366x900 and a phone's
390x844, the M-Bus Serial page's bus graphs, and a baud mismatch practised (the meters fall
silent at 9600, the Serial page says why).  Screenshots are kept as artefacts in
``browser-artefacts/`` (beside test_web_browser.py's).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from twisted.trial import unittest

from tests.support import simulated_gateway
from tests.test_web_browser import STEP_TIMEOUT, _playwright, launch_chromium

#: True once the meter page's live Last reading card shows the registers (it updates by itself, no reload).
READ = "() => document.querySelector('#last-reading table.values') !== null"
SIZES = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
#: The simulated heat meter's energy as a person reads it: digits grouped by a narrow no-break space.
ENERGY = re.compile(r"48[\u202f\u00a0 ]213 kWh")


class ReadingsBrowserTests(unittest.TestCase):
    def setUp(self) -> None:
        _playwright()  # skips before anything starts when Chromium or Playwright is missing
        self.folder = Path(self.mktemp()).resolve()
        self.gateway = simulated_gateway(self, self.folder)
        self.http = self.gateway.http
        self.browser = launch_chromium(self, _playwright())

    def page(self, size: str):
        context = self.browser.new_context(http_credentials={"username": "admin", "password": "admin"},
                                           viewport=SIZES[size])
        self.addCleanup(context.close)
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT)
        return page

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def screenshot(self, page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def add_meter(self, page) -> None:
        """heat-1, the simulated heat meter, on the meter list (saved as the page saves)."""
        page.goto(self.url("/readouts"))
        page.fill("#f-add-id", "heat-1")
        page.fill("#f-add-address", "12345678-KAM-19-04")
        page.fill("#f-add-name", "Flat 3 heat")
        page.click("#add button[type=submit]")
        page.wait_for_selector(".notice-ok")

    def test_readings_at_both_sizes(self) -> None:
        self.add_meter(self.page("desktop"))
        for size in SIZES:
            page = self.page(size)
            posts: list[str] = []
            page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
            response = page.goto(self.url("/meters"))
            self.assertEqual(response.status, 200, self.gateway.log())
            page.fill("#address-1", "banana")
            page.click("#reading-1 form:has(#address-1) button[type=submit]")
            page.wait_for_selector(".notice-error")
            self.assertIn("'banana' is not a meter address; type a primary address", page.inner_text(".notice-error"))
            page.fill("#address-1", "1")
            page.click("#reading-1 form:has(#address-1) button[type=submit]")
            page.wait_for_selector("#reading-1 table.values")
            self.assertEqual(page.url, self.url("/meters#reading-1"), "the address bar shows the page, not the form")
            values = page.inner_text("#reading-1 table.values")
            self.assertRegex(values, ENERGY, "the counter first, in kWh, digits grouped")
            self.assertLess(values.index("Energy"), values.index("Volume"))
            text = page.inner_text("#reading-1")
            self.assertIn("Kamstrup (KAM)", text)
            self.assertIn("25 (0x19)", text)
            self.assertIn("meter's clock", text)
            self.assertNotIn("m^3", text)
            self.assertFalse(page.is_visible("#reading-1 .reading-detail table"), "the records folded")
            page.click("#reading-1 .reading-detail summary")
            self.assertTrue(page.is_visible("#reading-1 .reading-detail table"), "one click away")
            self.screenshot(page, f"meters-read-{size}")

            page.goto(self.url("/readouts/heat-1"))
            page.click("#settings button:has-text('Read now')")
            page.wait_for_url(self.url("/readouts/heat-1"))
            self.assertIn(page.get_attribute("#last-reading", "data-live"), ("2", "5"), "live (faster while reading)")
            loads: list[str] = []
            page.on("framenavigated", lambda frame: loads.append(frame.url) if frame == page.main_frame else None)
            page.wait_for_function(READ, polling=250)
            self.assertEqual(loads, [], "the reading came by itself (live.js), without a reload")
            posts.clear()
            page.reload()
            self.assertEqual(posts, [], "a reload asks for the page, it never sends the form again")
            self.assertRegex(page.inner_text("#last-reading"), ENERGY)
            self.assertRegex(page.inner_text("#last-reading"), r"Read \d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
            page.wait_for_selector("#chart-energy svg .chart-axis", state="attached")
            self.assertIn("kWh", page.inner_text("#chart-energy figcaption"))
            width = page.evaluate("document.documentElement.scrollWidth")
            self.assertLessEqual(width, SIZES[size]["width"] + 1, "nothing pushed off-screen sideways")
            self.screenshot(page, f"meter-page-{size}")

            page.goto(self.url("/serial"))
            graph = page.wait_for_selector("#graph-bus1-transactions svg", state="attached")
            self.assertIsNotNone(graph)
            self.assertIn("Line 1: bus busy", page.content())
            self.screenshot(page, f"serial-graphs-{size}")

    def test_a_baud_mismatch_is_practised_and_warned(self) -> None:
        """The simulated meters answer at 2400 baud only: at 9600 they fall silent and the Serial page says why."""
        page = self.page("desktop")
        page.goto(self.url("/meters"))
        page.select_option("#kind-1", "secondary")
        page.click("#scan-1 form[action='/meters/scan'] button[type=submit]")
        page.wait_for_url(self.url("/meters#scan-1"))
        # The secondary search keeps wire time (about 12 s at 2400 baud); the card follows it by itself.
        page.wait_for_function("() => /Meters found\\s+4/.test(document.getElementById('scan-1').innerText)"
                               " && document.querySelector(\"#scan-1 form[action='/meters/scan']\") !== null",
                               timeout=90_000, polling=500)
        page.goto(self.url("/serial/configuration"))
        page.select_option("#f-line-1-baud-rate", "9600")
        page.click("#line-1 button[type=submit]")
        page.wait_for_selector(".notice-ok")
        warning = page.inner_text("#line-1 .notice-warn")
        self.assertIn("The last scan found 4 meters at 2400 baud; the line runs at 9600 baud now", warning)
        for size in SIZES:
            page.set_viewport_size(SIZES[size])
            self.screenshot(page, f"baud-mismatch-{size}")
        page.goto(self.url("/meters"))
        page.fill("#address-1", "1")
        page.click("#reading-1 form:has(#address-1) button[type=submit]")
        page.wait_for_selector(".notice-error")
        self.assertIn("the meter at address 1 did not answer", page.inner_text(".notice-error"),
                      "silent at another baud rate, said in words")

    def tearDown(self) -> None:
        artefacts = Path("browser-artefacts")
        artefacts.mkdir(exist_ok=True)
        for png in self.folder.glob("*.png"):
            shutil.copy(png, artefacts / f"{self._testMethodName}-{png.name}")
