"""Tests for cmegw.readout.delivery: the forwarder that drains a target's queue in time order."""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cmegw.readout.delivery import Forwarder
from cmegw.readout.reading import StoredReading, TargetStatus
from cmegw.readout.store import ReadingStore

T0 = 1_710_253_380.0


class DeliveryFailed(Exception):
    pass


@attrs.define(eq=False)
class FakeTarget:
    """A target in memory: takes readings, acknowledges or fails them when told (or at once)."""

    name: str = "fake"
    window: int = 3
    is_ready: bool = True
    auto_ack: bool = False
    status: TargetStatus = attrs.field(factory=lambda: TargetStatus("fake"))
    sent: list[tuple[StoredReading, defer.Deferred]] = attrs.field(factory=list)
    #: Fires with the ids sent once `expect` of them were acknowledged.
    done: defer.Deferred | None = None
    expect: int = 0
    acked: int = 0

    def start(self) -> None:
        pass

    def stop(self) -> defer.Deferred:
        return defer.succeed(None)

    def ready(self) -> bool:
        return self.is_ready

    def deliver(self, reading: StoredReading) -> defer.Deferred:
        d = defer.Deferred()
        self.sent.append((reading, d))
        if self.auto_ack:
            self._ack(d)
        return d

    def _ack(self, d: defer.Deferred) -> None:
        self.acked += 1
        d.callback(None)
        if self.done is not None and self.acked == self.expect:
            done, self.done = self.done, None
            done.callback([r.id for r, _ in self.sent])

    @property
    def open(self) -> list[tuple[StoredReading, defer.Deferred]]:
        return [(r, d) for r, d in self.sent if not d.called]

    def ack(self, n: int = 1) -> None:
        for _, d in self.open[:n]:
            self._ack(d)

    def fail(self, n: int = 1) -> None:
        for _, d in self.open[:n]:
            d.errback(DeliveryFailed("the broker went away"))

    def sent_times(self) -> list[float]:
        return [r.time - T0 for r, _ in self.sent]


class BrokenTarget(FakeTarget):
    def deliver(self, reading: StoredReading) -> defer.Deferred:
        raise DeliveryFailed("no route to the broker")


class SlowStore:
    """The store with its answers held back until released: shows what overlaps."""

    def __init__(self, store: ReadingStore) -> None:
        self.store = store
        self.held: list[tuple[defer.Deferred, defer.Deferred]] = []
        self.calls: list[str] = []

    def _slow(self, name: str, d: defer.Deferred) -> defer.Deferred:
        self.calls.append(name)
        later = defer.Deferred()
        self.held.append((d, later))
        return later

    def pending(self, *args):
        return self._slow("pending", self.store.pending(*args))

    def delivered(self, *args):
        return self._slow("delivered", self.store.delivered(*args))

    def backlog(self, target):
        return self.store.backlog(target)

    def release(self) -> None:
        while self.held:
            d, later = self.held.pop(0)
            d.chainDeferred(later)


def fired(d: defer.Deferred):
    out = []
    d.addBoth(out.append)
    assert out, f"{d!r} has not fired"
    return out[0]


class ForwarderTests(TestCase):
    def setUp(self):
        folder = Path(self.mktemp())
        folder.mkdir()
        self.clock = Clock()
        self.clock.advance(T0 + 3600)
        self.store = ReadingStore(folder / "readings.db", self.clock, inline=True)
        fired(self.store.open())
        self.addCleanup(self.store.close)
        self.target = FakeTarget()

    def add(self, *offsets: float, targets=("fake",)) -> list[StoredReading]:
        return [fired(self.store.add("m1", T0 + t, True, ["68"], {"records": []}, "", list(targets)))
                for t in offsets]

    def forwarder(self, store=None, **kw) -> Forwarder:
        kw.setdefault("random", lambda: 1.0)
        forwarder = Forwarder(store or self.store, self.target, self.clock, **kw)
        self.addCleanup(forwarder.stop)
        return forwarder

    def backlog(self) -> int:
        return fired(self.store.backlog("fake"))[0]

    def test_window_and_time_order(self):
        self.add(40, 10, 30, 20, 50)
        f = self.forwarder()
        f.start()
        self.assertEqual(self.target.sent_times(), [10, 20, 30])
        self.assertEqual(f.in_flight, 3)
        self.clock.advance(5)  # the poll sends nothing beyond the window
        self.assertEqual(len(self.target.sent), 3)
        self.target.ack()
        self.assertEqual(self.target.sent_times(), [10, 20, 30, 40])
        self.clock.advance(2)
        self.target.ack(3)
        self.assertEqual(self.target.sent_times(), [10, 20, 30, 40, 50])
        self.target.ack()
        self.assertEqual(self.backlog(), 0)
        self.assertEqual(self.target.status.delivered, 5)
        self.assertEqual(self.target.status.last_delivery, T0 + 3600 + 7)
        self.assertEqual(self.target.status.failures, 0)

    def test_wake_sends_a_new_reading(self):
        f = self.forwarder()
        f.start()
        self.add(1)
        self.assertEqual(self.target.sent, [])
        f.wake()
        self.assertEqual(self.target.sent_times(), [1])

    def test_poll_drains_a_target_that_became_ready(self):
        self.target.is_ready = False
        self.add(1, 2)
        f = self.forwarder()
        f.start()
        f.wake()
        self.assertEqual(self.target.sent, [])
        self.target.is_ready = True
        self.clock.advance(1.0)
        self.assertEqual(self.target.sent_times(), [1, 2])

    def test_failure_backs_off_and_starts_again_from_the_oldest(self):
        self.add(1, 2, 3, 4, 5)
        f = self.forwarder(backoff_min=2.0)
        f.start()
        self.target.ack()  # 1 delivered; 2, 3, 4 in flight
        self.target.fail()  # 2 fails
        self.assertEqual(self.target.status.failures, 1)
        self.assertTrue(f.backing_off)
        self.target.fail(2)  # 3 and 4 fail too: the same breakdown
        self.assertEqual(self.target.status.failures, 1)
        f.wake()
        self.clock.advance(1.9)
        self.assertEqual(self.target.sent_times(), [1, 2, 3, 4])
        self.clock.advance(0.1)
        self.assertFalse(f.backing_off)
        self.assertEqual(self.target.sent_times(), [1, 2, 3, 4, 2, 3, 4])
        self.target.ack(3)
        self.assertEqual(self.target.sent_times()[-1], 5)
        self.target.ack()
        self.assertEqual(self.backlog(), 0)
        self.assertEqual(self.target.status.delivered, 5)

    def test_only_what_was_in_flight_arrives_twice(self):
        self.add(1, 2, 3, 4, 5, 6)
        f = self.forwarder(backoff_min=1.0)
        f.start()
        self.target.fail()  # 1 fails; 2 and 3 still in flight
        self.target.ack(2)  # late acknowledgements still count
        self.assertEqual(self.target.status.delivered, 2)
        self.assertEqual(self.backlog(), 4)
        self.clock.advance(1.0)
        self.assertEqual(self.target.sent_times(), [1, 2, 3, 1, 4, 5])

    def test_backoff_doubles_with_jitter_and_is_bounded(self):
        f = self.forwarder(backoff_min=1.0, backoff_max=60.0, random=lambda: 0.0)
        self.assertEqual([f.backoff_delay(n) for n in (1, 2, 3, 4, 7, 8, 100)],
                         [0.5, 1.0, 2.0, 4.0, 30.0, 30.0, 30.0])
        f = self.forwarder(backoff_min=1.0, backoff_max=60.0, random=lambda: 0.999)
        self.assertAlmostEqual(f.backoff_delay(7), 59.97)
        self.assertAlmostEqual(f.backoff_delay(1000), 59.97)

    def test_repeated_failures_wait_longer_success_resets(self):
        self.add(1)
        f = self.forwarder(backoff_min=1.0, backoff_max=4.0)
        f.start()
        waits = []
        for _ in range(4):
            self.target.fail()
            before = len(self.target.sent)
            for step in range(1, 100):
                self.clock.advance(0.5)
                if len(self.target.sent) > before:
                    break
            waits.append(step * 0.5)
        self.assertEqual(waits, [1.0, 2.0, 4.0, 4.0])
        self.assertEqual(self.target.status.failures, 4)
        self.target.ack()
        self.add(2)
        f.wake()
        self.target.fail()
        self.clock.advance(0.5)
        self.assertEqual(len(self.target.open), 0)
        self.clock.advance(0.5)
        self.assertEqual(len(self.target.open), 1)

    def test_deliver_raising_is_a_failure(self):
        self.add(1)
        self.target = BrokenTarget()
        f = self.forwarder()
        f.start()
        self.assertEqual(self.target.status.failures, 1)
        self.assertTrue(f.backing_off)

    def test_stop_cancels_the_timer_and_ignores_late_answers(self):
        self.add(1, 2)
        f = self.forwarder()
        f.start()
        f.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.target.ack(2)
        self.assertEqual(self.target.status.delivered, 0)
        self.assertEqual(self.backlog(), 2)
        f.start()
        self.assertEqual(self.target.sent_times(), [1, 2, 1, 2])
        self.target.fail()
        f.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_never_two_fetches_at_once(self):
        slow = SlowStore(self.store)
        self.add(1, 2)
        f = self.forwarder(store=slow)
        f.start()
        f.wake()
        f.wake()
        self.clock.advance(3)
        self.assertEqual(slow.calls, ["pending"])
        slow.release()  # the wakes meanwhile ask once more, after the first answer
        self.assertEqual(self.target.sent_times(), [1, 2])
        self.assertEqual(slow.calls, ["pending", "pending"])

    def test_acknowledged_are_not_sent_again_before_they_leave_the_queue(self):
        slow = SlowStore(self.store)
        self.add(1, 2, 3, 4)
        f = self.forwarder(store=slow)
        f.start()
        slow.release()
        self.target.ack(3)  # one removal runs, the other two acknowledgements wait for it
        self.assertEqual(slow.calls.count("delivered"), 1)
        slow.release()
        slow.release()
        slow.release()
        self.assertEqual(slow.calls.count("delivered"), 2)
        self.assertEqual(self.target.sent_times(), [1, 2, 3, 4])
        self.target.ack()
        for _ in range(3):
            slow.release()
        self.clock.advance(1)
        slow.release()
        self.assertEqual(self.target.sent_times(), [1, 2, 3, 4])
        self.assertEqual(self.backlog(), 0)

    def test_other_targets_untouched(self):
        self.add(1, targets=("fake", "other"))
        f = self.forwarder()
        f.start()
        self.target.ack()
        self.assertEqual(fired(self.store.backlogs()), {"other": (1, T0 + 1)})
        self.assertEqual(fired(f.backlog()), (0, None))


class ThreadedForwarderTests(TestCase):
    """The forwarder on the reactor with the store on its thread."""

    @defer.inlineCallbacks
    def test_drains_a_backlog(self):
        folder = Path(self.mktemp())
        folder.mkdir()
        store = ReadingStore(folder / "readings.db", reactor)
        yield store.open()
        self.addCleanup(store.close)
        yield defer.gatherResults([store.add("m1", T0 + i, True, ["68"], {"records": []}, "", ["fake"])
                                   for i in range(50)])
        target = FakeTarget(window=4, auto_ack=True, expect=50, done=defer.Deferred())
        target.done.addTimeout(20, reactor)
        f = Forwarder(store, target, reactor)
        self.addCleanup(f.stop)
        f.start()
        sent = yield target.done
        self.assertEqual(sent, list(range(1, 51)))
        for _ in range(100):  # the last removals may still be on their way
            if (yield store.backlog("fake")) == (0, None):
                break
            yield store.flush()
        self.assertEqual((yield store.backlog("fake")), (0, None))
        self.assertEqual(target.status.delivered, 50)
