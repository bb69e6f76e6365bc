"""The readout schedule: aligned to the clock, one read at a time per line, alarms after failed reads."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from cmegw.config.readout import MeterConfig, ReadoutConfig
from cmegw.readout.reading import StoredReading
from cmegw.readout.scheduler import Scheduler, next_due


class FakeBus:
    """Reads that the test completes: one pending Deferred per (line, address)."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, str, defer.Deferred]] = []
        self.recorded: list[tuple[str, Any, str]] = []

    def read(self, line: int, address: str) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.pending.append((line, address, d))
        return d

    def record(self, key: str, reading: Any, error: str) -> StoredReading:
        self.recorded.append((key, reading, error))
        return StoredReading(len(self.recorded), key, 0.0, ok=reading is not None, error=error)

    def answer(self, index: int = 0, reading: Any = "reading") -> None:
        line, address, d = self.pending.pop(index)
        d.callback(reading)

    def fail(self, index: int = 0, why: str = "no answer") -> None:
        line, address, d = self.pending.pop(index)
        d.errback(RuntimeError(why))


def meters(**specs: dict) -> dict[str, MeterConfig]:
    return {key: MeterConfig(**spec) for key, spec in specs.items()}


class AlignmentTests(unittest.TestCase):
    def test_next_due(self) -> None:
        self.assertEqual(next_due(0.0, 900), 900)
        self.assertEqual(next_due(899.9, 900), 900)
        self.assertEqual(next_due(900.0, 900), 1800)
        # One hour ahead of UTC: a daily read at local midnight is at 23:00 UTC.
        self.assertEqual(next_due(3600.0, 86400, offset=3600), 86400 - 3600)


class SchedulerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.bus = FakeBus()
        self.scheduler = Scheduler(self.clock, self.bus.read, self.bus.record, offset=lambda now: 0.0)

    def start(self, listed: dict[str, MeterConfig], interval: str = "1h", alarm_after: int = 3) -> None:
        self.scheduler.apply(listed, ReadoutConfig(interval=interval, alarm_after=alarm_after))
        self.scheduler.start()
        self.addCleanup(self.scheduler.stop)

    def test_reads_at_aligned_times(self) -> None:
        self.clock.advance(100)
        self.start(meters(heat={"address": "5", "interval": "15m"}))
        self.assertEqual(self.scheduler.meters["heat"].next_due, 900)
        self.clock.advance(799)
        self.assertEqual(self.bus.pending, [])
        self.clock.advance(1)
        self.assertEqual([(l, a) for l, a, _ in self.bus.pending], [(1, "5")])
        self.bus.answer()
        self.clock.advance(900)
        self.assertEqual(len(self.bus.pending), 1)
        self.assertEqual(self.scheduler.meters["heat"].next_due, 2700)

    def test_default_interval(self) -> None:
        self.start(meters(heat={"address": "5"}), interval="1h")
        self.assertEqual(self.scheduler.meters["heat"].interval, 3600)

    def test_one_read_at_a_time_per_line_lines_in_parallel(self) -> None:
        self.start(meters(a={"address": "1"}, b={"address": "2"}, c={"address": "3", "line": 2}), interval="1m")
        self.clock.advance(60)
        self.assertEqual(sorted((l, a) for l, a, _ in self.bus.pending), [(1, "1"), (2, "3")])
        self.bus.answer(0)
        self.assertEqual(sorted((l, a) for l, a, _ in self.bus.pending), [(1, "2"), (2, "3")])

    def test_overrun_is_not_queued_twice(self) -> None:
        self.start(meters(a={"address": "1"}, b={"address": "2"}), interval="1m")
        self.clock.advance(60)  # a reads, b waits
        self.clock.advance(60)  # b still waits: one overrun; a is due again and queued
        self.assertEqual(self.scheduler.meters["b"].overruns, 1)
        self.assertEqual(len(self.bus.pending), 1)

    def test_alarm_after_failed_reads_cleared_by_a_good_one(self) -> None:
        self.start(meters(a={"address": "1"}), interval="1m", alarm_after=2)
        status = self.scheduler.meters["a"]
        for _ in range(2):
            self.clock.advance(60)
            self.bus.fail(why="no answer from primary address 1 after 4 tries")
        self.assertTrue(status.alarm)
        self.assertEqual(status.last_error, "no answer from primary address 1 after 4 tries")
        self.clock.advance(60)
        self.bus.answer()
        self.assertFalse(status.alarm)
        self.assertEqual((status.reads, status.failures, status.failures_in_row), (3, 2, 0))
        self.assertEqual([e for _, _, e in self.bus.recorded], ["no answer from primary address 1 after 4 tries"] * 2
                         + [""])

    def test_disabled_meter_not_scheduled_but_read_now(self) -> None:
        self.start(meters(a={"address": "1", "enabled": False}), interval="1m")
        self.clock.advance(600)
        self.assertEqual(self.bus.pending, [])
        results = []
        self.scheduler.read_now().addCallback(results.append)
        self.bus.answer()
        self.assertEqual(list(results[0]), ["a"])
        self.assertEqual(results[0]["a"].meter, "a")

    def test_read_now_of_a_queued_meter_reads_it_once(self) -> None:
        self.start(meters(a={"address": "1"}, b={"address": "2"}), interval="1m")
        self.clock.advance(60)  # a reading, b queued
        done = []
        self.scheduler.read_now(["b"]).addCallback(done.append)
        self.bus.answer()
        self.bus.answer()
        self.assertEqual(self.bus.pending, [])
        self.assertEqual(list(done[0]), ["b"])
        self.assertEqual(self.scheduler.meters["b"].overruns, 0)

    def test_unknown_meter(self) -> None:
        self.start(meters(a={"address": "1"}))
        e = self.assertRaises(KeyError, self.scheduler.read_now, ["zz"])
        self.assertIn("there is no meter zz", str(e))

    def test_changed_list(self) -> None:
        self.start(meters(a={"address": "1"}, b={"address": "2"}), interval="1m")
        self.clock.advance(60)
        self.bus.answer()
        self.bus.answer()
        removed = self.scheduler.apply(meters(a={"address": "1", "interval": "30s"}), ReadoutConfig(interval="1m"))
        self.assertEqual([s.id for s in removed], ["b"])
        self.assertEqual(self.scheduler.meters["a"].reads, 1)
        self.assertEqual(self.scheduler.meters["a"].next_due, 90)

    def test_stop_cancels_the_timer(self) -> None:
        self.start(meters(a={"address": "1"}))
        self.scheduler.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
