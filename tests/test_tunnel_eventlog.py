"""Tests for cmegw.tunnel.eventlog: connection events logged without a flood."""

from twisted.internet import task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from cmegw.tunnel.eventlog import ConnectionEvents


class ConnectionEventsTests(TestCase):
    def setUp(self):
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.clock = task.Clock()
        self.events = ConnectionEvents(1, self.clock, limit=3, period=1.0)

    def texts(self):
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.observer if e.get("log_namespace") == "cmegw.tunnel"]

    def test_flood_summed_up(self):
        for i in range(10):
            self.events.info("Tunnel {n}: client {i} connected", i=i)
        self.assertEqual(self.texts(), [f"Tunnel 1: client {i} connected" for i in range(3)])
        self.clock.advance(1.0)
        self.assertEqual(len(self.texts()), 4)
        self.assertIn("7 more connection events", self.texts()[-1])
        self.events.info("Tunnel {n}: client {i} connected", i=99)
        self.assertEqual(self.texts()[-1], "Tunnel 1: client 99 connected", "a new second logs again")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flush_at_stop(self):
        for i in range(5):
            self.events.info("Tunnel {n}: x{i}", i=i)
        self.events.flush()
        self.assertIn("2 more connection events", self.texts()[-1])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.events.flush()
        self.assertEqual(len(self.texts()), 4, "nothing more to sum up")
