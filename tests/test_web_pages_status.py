"""
Tests for `cmegw.web.pages.status`: the Status page's build date, and the
live parts of the pages (`cmegw.web.pages.layout.live`).
"""

from __future__ import annotations

import time

from twisted.internet import defer
from twisted.trial import unittest
from twisted.web.template import tags

from cmegw.web.accesslog import LIVE_HEADER
from cmegw.web.pages.layout import live, web_root
from tests.web_helpers import PagesTestBase


class BuildDateTests(unittest.SynchronousTestCase):
    """The Status page's build date while a software update replaces the package files."""

    def setUp(self) -> None:
        from cmegw.web.pages import status as pages_status

        self.pages_status = pages_status
        pages_status.build_date.cache_clear()
        self.addCleanup(pages_status.build_date.cache_clear)

    def test_read_once(self) -> None:
        """The files can vanish under a running gateway (pip replacing them): the date stays."""
        first = self.pages_status.build_date()
        self.assertRegex(first, r"^\d{4}-\d{2}-\d{2}$")
        self.patch(self.pages_status.cmegw, "__file__", "/nonexistent/cmegw/__init__.py")
        self.assertEqual(self.pages_status.build_date(), first)

    def test_missing_files(self) -> None:
        """Package files that cannot be read give "unknown", not an error page."""
        self.patch(self.pages_status.cmegw, "__file__", "/nonexistent/cmegw/__init__.py")
        self.assertEqual(self.pages_status.build_date(), "unknown")


class LivePageTests(PagesTestBase):
    """The parts that update by themselves (web/static/live.js), and the line that says when a page was drawn."""

    @defer.inlineCallbacks
    def test_live_parts_of_each_page(self) -> None:
        for path, parts in (("/status", ("status-live", "status-graphs")),
                            ("/tcpip", ("tcpip-statistics", "tcpip-graphs")),
                            ("/serial", ("serial-statistics", "serial-graphs")),
                            ("/http", ("http-statistics",)), ("/graphs", ("graphs",))):
            _, body = yield self.get(path)
            for part in parts:
                self.assertRegex(body, rf'id="{part}"[^>]* data-live="\d+"|data-live="\d+"[^>]* id="{part}"',
                                 f"{path}: {part}")
            self.assertIn('<script src="/static/live.js" defer="defer"></script>', body, path)
            self.assertIn('id="drawn-at"', body, path)

    @defer.inlineCallbacks
    def test_drawn_at_and_no_reload_with_script(self) -> None:
        self.clock.advance(3600 * 10 + 42 * 60 + 5)
        _, body = yield self.get("/status")
        when = time.strftime("%H:%M:%S", time.localtime(self.clock.seconds()))
        self.assertIn(f">{when}</time>.</p>", body)
        self.assertIn('<noscript><meta http-equiv="refresh" content="30" /></noscript>', body,
                      "only a browser without script reloads the whole page")

    @defer.inlineCallbacks
    def test_a_live_fetch_sees_new_counters(self) -> None:
        _, before = yield self.get("/http", headers={LIVE_HEADER: [b"1"]})
        self.web.stats.status_404 = 4242
        _, after = yield self.get("/http", headers={LIVE_HEADER: [b"1"]})
        self.assertNotIn("4242", before)
        self.assertIn("4242", after.split('id="http-statistics"')[1].split("</section>")[0])

    def test_a_live_part_needs_an_id(self) -> None:
        self.assertRaises(ValueError, live, tags.div("x"))
        self.assertEqual(live(tags.div(id="x"), 2).attributes["data-live"], "2")

    def test_script_is_served(self) -> None:
        script = (web_root() / "static" / "live.js").read_text()
        self.assertIn("X-Cmegw-Live", script, "the fetches say they are live updates")
        self.assertEqual(LIVE_HEADER.decode(), "x-cmegw-live")
