"""The forwarder: a target's queue drained in order, acknowledged readings removed, back-off after a failure."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import defer, task
from twisted.trial import unittest

from cmegw.readout.delivery import Forwarder
from cmegw.readout.reading import StoredReading, TargetStatus
from cmegw.readout.store import ReadingStore


class FakeTarget:
    """Acknowledges when the test says so; can be down."""

    def __init__(self, window: int = 2) -> None:
        self.name = "mqtt"
        self.status = TargetStatus("mqtt")
        self.window = window
        self.up = True
        self.sent: list[tuple[int, defer.Deferred]] = []

    def start(self) -> None:
        self.started = True

    def stop(self) -> defer.Deferred:
        self.up = False
        return defer.succeed(None)

    def ready(self) -> bool:
        return self.up

    def deliver(self, reading: StoredReading) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.sent.append((reading.id, d))
        return d

    def ack(self, count: int = 1) -> None:
        for _ in range(count):
            self.sent.pop(0)[1].callback(None)

    def fail(self, why: str = "connection lost") -> None:
        self.up = False
        while self.sent:
            self.sent.pop(0)[1].errback(ConnectionError(why))


class ForwarderTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        folder = Path(self.mktemp())
        folder.mkdir()
        self.store = ReadingStore(folder / "r.sqlite", self.clock, inline=True)
        self.successResultOf(self.store.open())
        self.addCleanup(self.store.close)
        self.target = FakeTarget()
        self.forwarder = Forwarder(self.store, self.target, self.clock, backoff_min=2.0, backoff_max=8.0,
                                   random=lambda: 1.0)
        self.addCleanup(self.forwarder.stop)

    def add(self, count: int) -> None:
        for _ in range(count):
            t = float(len(self.successResultOf(self.store.readings(None, limit=-1))))
            self.successResultOf(self.store.add("m", t, True, ["68"], {}, "", ["mqtt"]))

    def backlog(self) -> int:
        return self.successResultOf(self.store.backlog("mqtt"))[0]

    def sent_ids(self) -> list[int]:
        return [i for i, _ in self.target.sent]

    def test_in_order_within_the_window(self) -> None:
        self.add(5)
        self.forwarder.start()
        self.assertEqual(self.sent_ids(), [1, 2])
        self.target.ack(2)
        self.assertEqual(self.sent_ids(), [3, 4])
        self.target.ack(2)
        self.target.ack(1)
        self.assertEqual(self.backlog(), 0)
        self.assertEqual(self.target.status.delivered, 5)

    def test_wake_sends_a_new_reading(self) -> None:
        self.forwarder.start()
        self.add(1)
        self.assertEqual(self.sent_ids(), [])
        self.forwarder.wake()
        self.assertEqual(self.sent_ids(), [1])

    def test_wake_while_draining_goes_round_again(self) -> None:
        self.add(1)
        self.forwarder.start()
        self.add(1)
        self.forwarder.wake()
        self.assertEqual(self.sent_ids(), [1], "one drain at a time")
        self.target.ack()
        self.assertEqual(self.sent_ids(), [2])

    def test_failure_backs_off_and_resends_from_the_oldest(self) -> None:
        self.add(3)
        self.forwarder.start()
        self.target.ack(1)  # 1 delivered, 2 in flight, 3 waits for the next batch
        self.assertEqual(self.sent_ids(), [2])
        self.target.fail()
        self.assertEqual(self.target.status.failures, 1)
        self.assertEqual(self.target.status.error, "connection lost")
        self.target.up = True
        self.clock.advance(1.0)  # the periodic check: still holding (2 s)
        self.assertEqual(self.sent_ids(), [])
        self.clock.advance(1.0)
        self.assertEqual(self.sent_ids(), [2, 3], "again from the oldest undelivered, in order")
        self.target.ack(2)
        self.assertEqual(self.backlog(), 0)

    def test_backoff_doubles_up_to_the_longest(self) -> None:
        self.add(1)
        self.forwarder.start()
        holds = []
        for _ in range(4):
            self.target.fail()
            holds.append(self.forwarder.holding)
            self.target.up = True
            self.clock.advance(holds[-1])
            self.clock.advance(1.0)
        self.assertEqual(holds, [2.0, 4.0, 8.0, 8.0])

    def test_not_ready_sends_nothing(self) -> None:
        self.target.up = False
        self.add(2)
        self.forwarder.start()
        self.clock.advance(5)
        self.assertEqual(self.sent_ids(), [])
        self.target.up = True
        self.clock.advance(1)
        self.assertEqual(self.sent_ids(), [1, 2])

    def test_stop(self) -> None:
        self.forwarder.start()
        self.forwarder.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
