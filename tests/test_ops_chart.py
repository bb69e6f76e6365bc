"""Tests for cmegw.ops.chart: the one SVG line chart (axes of values and local times, gaps, legend)."""

from __future__ import annotations

import re

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.template import flattenString

from cmegw.ops import chart
from tests.support import local_time_in_utc

#: 2024-03-12 14:23:00 UTC
T0 = 1710253380.0


class ChartTests(TestCase):
    def setUp(self) -> None:
        local_time_in_utc(self)

    def test_value_ticks_are_round(self) -> None:
        ticks, decimals = chart.value_ticks(48213.0, 48391.0)
        self.assertEqual((ticks[0], ticks[-1], decimals), (48200.0, 48400.0, 0))
        self.assertLessEqual(len(ticks), 6)
        ticks, decimals = chart.value_ticks(0.12, 0.87)
        self.assertEqual(decimals, 1)
        ticks, _ = chart.value_ticks(5.0, 5.0)
        self.assertLess(ticks[0], 5.0)
        self.assertGreater(ticks[-1], 5.0)

    def test_time_ticks(self) -> None:
        day = chart.time_ticks(T0 - 86400, T0)
        self.assertEqual([label for _, label in day], ["18:00", "00:00", "06:00", "12:00"])
        week = chart.time_ticks(T0 - 7 * 86400, T0)
        self.assertEqual(week[0][1], "03-06")
        self.assertTrue(all(T0 - 7 * 86400 <= t <= T0 for t, _ in week))

    def test_reduce_points_keeps_the_extremes(self) -> None:
        points = [(float(i), float(i % 97)) for i in range(10000)]
        reduced = chart.reduce_points(points, 600)
        self.assertLessEqual(len(reduced), 620)
        self.assertEqual(max(v for _, v in reduced), 96.0)
        self.assertEqual(reduced, sorted(reduced))

    def test_value_ticks_from_zero(self) -> None:
        ticks, _ = chart.value_ticks(0.0, 0.0)
        self.assertEqual(ticks[0], 0.0, "an idle counter stays on zero")
        self.assertGreater(ticks[-1], 0.0)

    def test_runs_break_at_missing_values_and_pauses(self) -> None:
        points = [(0.0, 1.0), (10.0, 2.0), (20.0, None), (30.0, 3.0), (40.0, 4.0), (500.0, 5.0), (510.0, 6.0)]
        self.assertEqual(chart.runs(points), [[(0.0, 1.0), (10.0, 2.0)], [(30.0, 3.0), (40.0, 4.0)],
                                              [(500.0, 5.0), (510.0, 6.0)]])
        self.assertEqual(chart.runs([]), [])

    @inlineCallbacks
    def test_axes_with_values_and_times(self) -> None:
        points = [(T0 - 3600 * (23 - i), 48213.0 + 10 * i) for i in range(24)]
        svg = (yield flattenString(None, chart.line_chart("Energy", "kWh", [chart.Line("Energy", points)],
                                                          T0 - 86400, T0))).decode()
        labels = re.findall(r'class="chart-label"[^>]*>([^<]*)</text>', svg)
        self.assertIn("18:00", labels)
        self.assertIn("48\u202f300", labels, "digits grouped on the value axis")
        self.assertEqual(svg.count('class="chart-axis"'), 2)
        self.assertIn('>kWh</text>', svg)
        self.assertIn('aria-label="Energy in kWh over time"', svg)
        self.assertEqual(svg.count("<polyline"), 1)
        self.assertNotIn("<rect", svg, "no legend for one line")
        self.assertNotIn("<script", svg)

    @inlineCallbacks
    def test_empty_and_legend(self) -> None:
        svg = (yield flattenString(None, chart.line_chart("Bus", "per min", [chart.Line("all", []),
                                                                             chart.Line("silent", [])],
                                                          T0 - 3600, T0, zero=True, empty="no samples yet",
                                                          description="Bus: nothing yet"))).decode()
        self.assertIn("no samples yet", svg)
        self.assertIn("<title>Bus: nothing yet</title>", svg)
        self.assertEqual(svg.count("<rect"), 2, "a legend entry per line")
