"""Tests for cmegw.tunnel.dialing: host order, back-off and connect mode's state in words."""

from twisted.trial.unittest import TestCase

from cmegw.stats import ConnectStatistics
from cmegw.tunnel.dialing import backoff_delay, host_order


class DialingTests(TestCase):
    def test_delay_function(self):
        self.assertEqual([backoff_delay(n, 1, 60, lambda: 0.0) for n in range(1, 9)], [1, 2, 4, 8, 16, 32, 60, 60])
        self.assertEqual(backoff_delay(1, 1, 60, lambda: 0.999), 1.4995)
        self.assertEqual(backoff_delay(6, 1, 60, lambda: 0.999), 32 * 1.4995)
        self.assertEqual(backoff_delay(7, 1, 60, lambda: 0.999), 60, "jitter never goes past the longest wait")
        self.assertEqual(backoff_delay(3, 5, 2, lambda: 0.0), 5, "a longest wait below the first: the first caps")

    def test_order_function(self):
        self.assertEqual(host_order(3, "sequential", 2), [0, 1, 2])
        self.assertEqual(host_order(3, "round-robin", 2), [2, 0, 1])
        self.assertEqual(host_order(3, "round-robin", 4), [1, 2, 0])
        self.assertEqual(host_order(0, "round-robin", 1), [])


class StatisticsTests(TestCase):
    def test_texts(self):
        s = ConnectStatistics()
        self.assertEqual(s.text(0), "disabled")
        s.state, s.host = "connecting", "headend.example:4443 (TLS)"
        self.assertEqual(s.text(0), "connecting to headend.example:4443 (TLS)")
        s.state, s.retry_at = "retry", 30.0
        self.assertEqual(s.text(0), "waiting 30 s before retry")
        self.assertEqual(s.as_dict(29.5)["text"], "waiting 1 s before retry")
