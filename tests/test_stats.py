"""Tests for cmegw.stats: the statistics objects the parts count into."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cmegw.stats import HttpStatistics, LineStatistics, TunnelStatistics, format_duration


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

    def test_line_as_dict(self):
        self.assertEqual(LineStatistics(rx_bytes=3).as_dict()["rx_bytes"], 3)
