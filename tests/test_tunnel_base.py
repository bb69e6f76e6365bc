"""Tests for cmegw.tunnel.base: what every tunnel shares (the protocol itself is tested through accept mode)."""

from twisted.trial.unittest import TestCase

from cmegw.tunnel.base import keepalive_options


class KeepaliveTests(TestCase):
    def test_keepalive_options(self):
        idle, interval, count = keepalive_options(45)
        self.assertEqual(idle + interval * count, 45)
        self.assertEqual(keepalive_options(1), (1, 1, 3))
