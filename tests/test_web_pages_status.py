"""
Tests for `cmegw.web.pages.status`: the Status page's build date.
"""

from __future__ import annotations

from twisted.trial import unittest


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
