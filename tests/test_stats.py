"""Tests for cmegw.stats: the statistics objects the parts count into."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cmegw.stats import (HTTP_COUNTERS, HttpStatistics, LineStatistics, TunnelStatistics, byte_size_text,
                         format_duration, http_status_text)


class StatisticsTests(TestCase):
    def test_format_duration(self):
        self.assertEqual(format_duration(77), "0 days 00:01:17")
        self.assertEqual(format_duration(2 * 86400 + 3661), "2 days 01:01:01")
        self.assertEqual(format_duration(-5), "0 days 00:00:00")

    def test_accept_connection_time_counts_the_current_client(self):
        stats = TunnelStatistics(accept_time_closed=10.0, connected_at=100.0)
        self.assertEqual(stats.accept_connection_time(105.0), 15.0)
        self.assertEqual(stats.as_dict(105.0)["accept_connection_time"], 15.0)
        stats.connected_at = None
        self.assertEqual(stats.accept_connection_time(200.0), 10.0)

    def test_http_responses_counted(self):
        stats = HttpStatistics()
        for code in (200, 200, 302, 999):
            stats.count_response(code)
        self.assertEqual((stats.status_200, stats.status_unknown), (2, 2))
        self.assertEqual(stats.by_status, {200: 2, 302: 1})
        self.assertEqual(stats.other_answers(), "302 Found: 1", "each status said; 999 is none")

    def test_http_words(self):
        """The labels and texts both faces show."""
        self.assertEqual(http_status_text(405), "405 Method Not Allowed")
        self.assertEqual(http_status_text(599), "599")
        self.assertEqual(HTTP_COUNTERS[2], ("200 OK", "status_200"))
        self.assertIn(("Other answers", "status_unknown"), HTTP_COUNTERS)
        self.assertEqual([byte_size_text(n) for n in (1, 999, 1_234_567)], ["1 byte", "999 bytes", "1.23 MB"])

    def test_line_as_dict(self):
        self.assertEqual(LineStatistics(rx_bytes=3).as_dict()["rx_bytes"], 3)
