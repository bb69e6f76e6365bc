"""
End to end: every page of the admin in headless Chromium (Debian's
``chromium`` through Playwright) at a desktop size (1366x900) and a phone
size (390x844), on a real ``twistd cmegw --simulate`` with meters read, so
the wide tables have rows.  On the phone no page is wider than the screen and
every section of the navigation can be reached (the menu opens); on the
desktop the status cards fill the width.  The screenshots are kept as
artefacts (browser-artefacts/, as tests.test_web_browser keeps them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.support import require_program, simulated_gateway
from tests.test_web_browser import CHROMIUM, CHROMIUM_ARGS, STEP_TIMEOUT, _playwright

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
#: Pages that must be among those the crawl finds (one per section and tab family at least).
EXPECTED = ("/status", "/network", "/network/interface", "/tcpip", "/tcpip/tls", "/serial", "/serial/configuration",
            "/meters", "/readouts", "/delivery", "/http", "/http/log", "/http/authentication", "/http/certificate",
            "/system", "/system/configuration")
#: Seconds curl may take.
CLIENT_TIMEOUT = 40
#: The most pages the crawl visits.
MAX_PAGES = 60
#: Links that are downloads, not pages.
DOWNLOADS = (".csv", ".json", ".txt", ".svg", ".toml", ".whl")

#: What a page measures of itself: its width against the screen's, and what sticks out.
MEASURE = """() => {
  const width = window.innerWidth;
  const wide = [];
  for (const el of document.querySelectorAll('body *')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    let clipped = false;
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const style = getComputedStyle(p);
      if (style.overflowX !== 'visible' || style.display === 'none') { clipped = true; break; }
    }
    if (!clipped && box.right > width)
      wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ').join('.') : '') +
                ' right=' + Math.round(box.right));
  }
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, wide: wide.slice(0, 5)};
}"""

#: The navigation's links: whether each is visible now (inside the screen and not hidden).
NAV_LINKS = """() => Array.from(document.querySelectorAll('nav.sections a')).map(a => {
  const box = a.getBoundingClientRect();
  const style = getComputedStyle(a);
  return {href: a.getAttribute('href'),
          visible: box.width > 0 && box.height > 0 && style.visibility !== 'hidden'
                   && box.left >= 0 && box.right <= window.innerWidth + 1};
})"""

#: The status cards: the right edge of the rightmost and the width of the content area.
CARDS = """() => {
  const main = document.querySelector('main').getBoundingClientRect();
  const cards = Array.from(document.querySelectorAll('main .cards > .card')).map(c => c.getBoundingClientRect());
  return {mainLeft: main.left, mainRight: main.right, count: cards.length,
          right: Math.max(...cards.map(c => c.right)), columns: new Set(cards.map(c => Math.round(c.left))).size};
}"""


class LayoutTests(unittest.TestCase):
    def setUp(self) -> None:
        sync_playwright = _playwright()
        self.curl = require_program("curl")
        self.folder = Path(self.mktemp()).resolve()
        self.gateway = simulated_gateway(self, self.folder)
        self.http = self.gateway.http
        self.read_meters()
        self.playwright = sync_playwright().start()
        self.addCleanup(self.playwright.stop)
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.addCleanup(self.browser.close)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def api(self, method: str, path: str, body: Any) -> Any:
        """A JSON request with the factory login (curl, Digest)."""
        result = subprocess.run([self.curl, "-s", "--fail-with-body", "--max-time", "30", "--digest", "-u",
                                 "admin:admin", "-X", method, "-H", "Content-Type: application/json",
                                 "--data-binary", json.dumps(body), self.url(path)],
                                capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        self.assertEqual(result.returncode, 0, (path, result.stdout, result.stderr))
        return json.loads(result.stdout)

    def read_meters(self) -> None:
        """A reading on the Meters page and one in the meter list, so their tables have rows."""
        self.api("POST", "/api/meters/1/read", {"address": 1})
        self.api("PUT", "/api/readout/meters/heat-1", {"line": 1, "address": "12345678-KAM-19-04",
                                                       "name": "Flat 3 heat"})
        self.api("POST", "/api/readout/meters/heat-1/read", {})

    def new_page(self, viewport: dict[str, int]) -> Any:
        context = self.browser.new_context(http_credentials={"username": "admin", "password": "admin"},
                                           viewport=viewport)
        self.addCleanup(context.close)
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT)
        return page

    def crawl(self, page: Any) -> list[str]:
        """Every admin page the navigation, the tabs and the pages' links lead to, from the Status page."""
        seen: list[str] = []
        todo = ["/status", "/readouts/heat-1"]
        while todo and len(seen) < MAX_PAGES:
            path = todo.pop(0)
            if path in seen:
                continue
            response = page.goto(self.url(path))
            self.assertEqual(response.status, 200, path)
            seen.append(path)
            links = page.eval_on_selector_all("nav.sections a, ul.tabs a, main a[href]",
                                          "as => as.map(a => a.getAttribute('href'))")
            todo.extend(h for h in links if h.startswith("/") and not h.startswith(("/api", "/static", "/metrics"))
                        and "?" not in h and "#" not in h and not h.endswith(DOWNLOADS) and h not in seen)
        for path in EXPECTED:
            self.assertIn(path, seen)
        return seen

    def shoot(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)

    def test_phone_every_page_fits_and_every_section_is_reachable(self) -> None:
        page = self.new_page(PHONE)
        problems = []
        for path in self.crawl(page):
            page.goto(self.url(path))
            self.shoot(page, "phone" + path.replace("/", "-"))
            size = page.evaluate(MEASURE)
            if size["scrollWidth"] > size["innerWidth"]:
                problems.append(f"{path}: {size['scrollWidth']} px wide on a {size['innerWidth']} px screen; "
                                f"sticking out: {size['wide']}")
        self.assertEqual(problems, [])
        page.goto(self.url("/status"))
        links = page.evaluate(NAV_LINKS)
        self.assertEqual(len(links), 7)
        hidden = [link["href"] for link in links if not link["visible"]]
        if hidden:  # a collapsed menu: one tap opens it and shows every section
            page.click("nav.sections summary")
            self.shoot(page, "phone-menu-open")
            self.assertEqual([link["href"] for link in page.evaluate(NAV_LINKS) if not link["visible"]], [])
        page.click("nav.sections a[href='/system']")
        page.wait_for_url(self.url("/system"))

    def test_desktop_every_page_and_the_status_cards_fill_the_width(self) -> None:
        page = self.new_page(DESKTOP)
        for path in self.crawl(page):
            page.goto(self.url(path))
            self.shoot(page, "desktop" + path.replace("/", "-"))
            size = page.evaluate(MEASURE)
            self.assertLessEqual(size["scrollWidth"], size["innerWidth"], (path, size["wide"]))
            self.assertEqual([link["href"] for link in page.evaluate(NAV_LINKS) if not link["visible"]], [], path)
        page.goto(self.url("/status"))
        cards = page.evaluate(CARDS)
        self.assertGreaterEqual(cards["count"], 3)
        self.assertGreaterEqual(cards["columns"], 2)
        self.assertGreater(cards["right"], cards["mainRight"] - 40, cards)

    def curl_status(self, *args: str) -> tuple[int, str]:
        """The status code and body of a request with the factory login."""
        result = subprocess.run([self.curl, "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "30", "--digest",
                                 "-u", "admin:admin", *args], capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        body, _, code = result.stdout.rpartition("\n")
        return int(code or 0), body

    def upload(self, page: Any, text: str, notice: str) -> str:
        """Restore `text` on the Configuration backup tab: the text of the `notice` the page answers with."""
        path = self.folder / "upload" / "cmegw.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        page.set_input_files("#f-file", str(path))
        page.click("#restore button[type=submit]")
        page.wait_for_selector(notice)
        return page.inner_text(notice)

    def test_backup_and_restore(self) -> None:
        """Download the backup on the page, upload it changed and broken; then the same through the API with curl."""
        config_file = self.folder / "gw" / "cmegw.toml"
        self.api("PUT", "/api/settings", {"mqtt.password": "mqtt-secret-1"})
        saved = tomllib.loads(config_file.read_text())
        hashes = [saved["auth"][0]["user"][0]["ha1_md5"], saved["auth"][0]["user"][0]["ha1_sha256"]]
        page = self.new_page(DESKTOP)
        page.goto(self.url("/system/configuration"))
        self.shoot(page, "desktop-backup")
        with page.expect_download() as download:
            page.click("text=Download cmegw.toml")
        backup = Path(download.value.path()).read_text()
        self.assertTrue(backup.startswith("# cmegw configuration backup"))
        self.assertIn("Secrets are left out", backup)
        for secret in ["mqtt-secret-1", *hashes]:
            self.assertNotIn(secret, backup)

        self.assertIn("line.1.baud_rate",
                      self.upload(page, backup.replace("baud_rate = 2400", "baud_rate = 300"), ".notice-ok"))
        self.assertEqual(page.url, self.url("/system/configuration"), "post/redirect/get")
        self.shoot(page, "desktop-restored")
        posts: list[str] = []
        page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
        page.reload()
        self.assertEqual(posts, [], "a reload does not restore again")
        self.assertEqual(page.locator(".notice-ok").count(), 0, "the notice is shown once")
        saved = tomllib.loads(config_file.read_text())
        self.assertEqual(saved["line"]["1"]["baud_rate"], 300)
        self.assertEqual(saved["mqtt"]["password"], "mqtt-secret-1", "a secret the file left out is kept")
        self.assertEqual([saved["auth"][0]["user"][0][k] for k in ("ha1_md5", "ha1_sha256")], hashes)

        before = config_file.read_bytes()
        refused = self.upload(page, backup.replace("baud_rate = 2400", "baud_rate = 1234"), ".notice-error")
        self.assertIn("setting line.1.baud_rate: Baud rate of line 1: 1234 is not allowed", refused)
        self.assertIn("cmegw.toml, line ", refused)
        self.shoot(page, "desktop-refused")
        self.assertEqual(config_file.read_bytes(), before, "a refused file changes nothing")

        code, text = self.curl_status(self.url("/api/config/file"))
        self.assertEqual(code, 200)
        self.assertNotIn("mqtt-secret-1", text)
        api_file = self.folder / "api.toml"
        api_file.write_text(text.replace("keepalive = 45", "keepalive = 60"))
        code, answer = self.curl_status("-X", "PUT", "-H", "Content-Type: application/toml", "--data-binary",
                                 f"@{api_file}", self.url("/api/config/file"))
        self.assertEqual(code, 200, answer)
        self.assertEqual(json.loads(answer)["changed"], ["tunnel.1.keepalive"])
        self.assertEqual(tomllib.loads(config_file.read_text())["tunnel"]["1"]["keepalive"], 60)
        before = config_file.read_bytes()
        api_file.write_text(text[:len(text) // 2])
        code, answer = self.curl_status("-X", "PUT", "-H", "Content-Type: application/toml", "--data-binary",
                                 f"@{api_file}", self.url("/api/config/file"))
        self.assertEqual(code, 400, answer)
        self.assertIn("error", json.loads(answer))
        self.assertEqual(config_file.read_bytes(), before)

    def tearDown(self) -> None:
        artefacts = Path("browser-artefacts")
        artefacts.mkdir(exist_ok=True)
        for png in self.folder.glob("*.png"):
            shutil.copy(png, artefacts / f"{self._testMethodName}-{png.name}")
