"""The reading store: SQLite in WAL, a queue per target, retention, a full disk, a kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial import unittest

from cmegw.readout.store import ReadingStore, StoreError

DECODED = {"meter": {"identification": "12345678", "manufacturer": "KAM"}, "status": 0,
           "records": [{"value": 48213000, "unit": "Wh", "quantity": "Energy", "storage": 0, "tariff": 0,
                        "subunit": 0, "function": "Instantaneous value", "description": "Energy"},
                       {"value": 1234.56, "unit": "m^3", "quantity": "Volume", "storage": 0, "tariff": 0,
                        "subunit": 0, "function": "Instantaneous value", "description": "Volume"}]}

WRITER = r"""
import sys, time
from twisted.internet import task
from cmegw.readout.store import ReadingStore
store = ReadingStore(sys.argv[1], task.Clock(), inline=True)
store.open()
decoded = {"records": [{"value": 1.5, "unit": "m^3", "quantity": "Volume"}] * 20}
for i in range(100000):
    d = store.add("m", float(i), True, ["68aa" * 40], decoded, "", ["mqtt"])
    print(d.result.id, flush=True)
"""


class InlineStoreTests(unittest.TestCase):
    """The store's logic, run inline (no threads)."""

    def setUp(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir()
        self.path = folder / "readings.sqlite"
        self.store = self.open()

    def open(self) -> ReadingStore:
        store = ReadingStore(self.path, reactor, inline=True)
        self.successResultOf(store.open())
        self.addCleanup(store.close)
        return store

    def add(self, meter: str = "heat-1", time: float = 1000.0, ok: bool = True, targets=("mqtt",)):
        return self.successResultOf(self.store.add(meter, time, ok, ["68aa16"] if ok else [], DECODED if ok else {},
                                                   "" if ok else "no answer", list(targets)))

    def test_add_and_read_back(self) -> None:
        stored = self.add()
        self.assertEqual((stored.id, stored.meter, stored.ok), (1, "heat-1", True))
        [back] = self.successResultOf(self.store.readings("heat-1"))
        self.assertEqual(back, stored)
        self.assertEqual(back.decoded["records"][0]["value"], 48213000)

    def test_queue_order_and_delivery(self) -> None:
        for t in (30.0, 10.0, 20.0):
            self.add(time=t, targets=("mqtt", "push.1"))
        pending = self.successResultOf(self.store.pending("mqtt", 10))
        self.assertEqual([r.time for r in pending], [10.0, 20.0, 30.0])
        self.successResultOf(self.store.delivered("mqtt", [pending[0].id]))
        self.assertEqual(self.successResultOf(self.store.backlog("mqtt")), (2, 20.0))
        self.assertEqual(self.successResultOf(self.store.backlog("push.1")), (3, 10.0))
        self.successResultOf(self.store.drop_target("push.1"))
        self.assertEqual(self.successResultOf(self.store.backlogs()), {"mqtt": (2, 20.0)})

    def test_failed_reads_kept_never_queued(self) -> None:
        self.add(ok=False)
        self.add(time=2000.0)
        self.assertEqual(self.successResultOf(self.store.recent_results("heat-1", 5)), [True, False])
        self.assertEqual(self.successResultOf(self.store.backlog("mqtt")), (1, 2000.0))
        self.assertEqual(self.successResultOf(self.store.last("heat-1", ok_only=True)).time, 2000.0)
        self.assertEqual(self.successResultOf(self.store.readings("heat-1", ok_only=True))[0].time, 2000.0)

    def test_backlog_survives_a_restart(self) -> None:
        for t in range(5):
            self.add(time=float(t))
        self.successResultOf(self.store.close())
        again = self.open()
        self.assertEqual(self.successResultOf(again.backlog("mqtt")), (5, 0.0))

    def test_time_range_and_limit(self) -> None:
        for t in range(10):
            self.add(time=float(t))
        found = self.successResultOf(self.store.readings("heat-1", since=2.0, until=7.0, limit=3))
        self.assertEqual([r.time for r in found], [5.0, 6.0, 7.0])

    def test_export(self) -> None:
        self.add(time=0.0)
        self.add(time=60.0, ok=False)
        text = self.successResultOf(self.store.export_csv("heat-1"))
        lines = text.splitlines()
        self.assertEqual(lines[0].split(",")[:4], ["reading_id", "meter", "time_utc", "ok"])
        self.assertIn("1,heat-1,1970-01-01T00:00:00Z,1,Energy,48213000,Wh", lines[1])
        self.assertTrue(lines[3].endswith("no answer"))
        data = self.successResultOf(self.store.export_json(None))
        self.assertEqual([d["id"] for d in data], [1, 2])
        json.dumps(data)

    def test_retention_by_age(self) -> None:
        for t in (0.0, 100.0, 200.0):
            self.add(time=t)
        removed = self.successResultOf(self.store.prune(max_age=150.0, max_bytes=None, now=260.0))
        self.assertEqual(removed, 2)
        self.assertEqual(self.successResultOf(self.store.backlog("mqtt")), (1, 200.0))

    def test_retention_by_size_shrinks_the_file(self) -> None:
        for t in range(3000):
            self.add(time=float(t))
        self.successResultOf(self.store.prune(None, None))
        before = self.path.stat().st_size
        removed = self.successResultOf(self.store.prune(max_age=None, max_bytes=before // 4))
        self.assertGreater(removed, 1000)
        self.assertLess(self.path.stat().st_size, before // 2)
        left = self.successResultOf(self.store.readings(None, limit=-1))
        self.assertEqual(left[-1].time, 2999.0, "the newest stay")
        self.assertEqual(self.successResultOf(self.store.backlog("mqtt"))[0], len(left))

    def test_full_disk_holds_readings_in_memory(self) -> None:
        self.add(time=0.0)
        db = self.store.db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        held = []
        for t in range(1, 60):
            held.append(self.add(time=float(t)))
            if self.store.problem:
                break
        self.assertIn("is full", self.store.problem)
        self.assertEqual(held[-1].id, 0)
        self.assertGreater(self.store.stats.held_in_memory, 0)
        db.execute(f"PRAGMA max_page_count = {pages * 100}")
        self.add(time=100.0)
        self.assertEqual(self.store.problem, "")
        times = [r.time for r in self.successResultOf(self.store.readings("heat-1", limit=-1))]
        self.assertEqual(times, [float(t) for t in range(0, len(held) + 1)] + [100.0])

    def test_missing_folder(self) -> None:
        store = ReadingStore(Path(self.mktemp()) / "nowhere" / "r.sqlite", reactor, inline=True)
        failure = self.failureResultOf(store.open(), StoreError)
        self.assertIn("does not exist", failure.getErrorMessage())

    def test_not_a_database(self) -> None:
        self.successResultOf(self.store.close())
        self.path.write_bytes(b"this is not sqlite" * 100)
        store = ReadingStore(self.path, reactor, inline=True)
        failure = self.failureResultOf(store.open(), StoreError)
        self.assertIn(str(self.path), failure.getErrorMessage())
        self.assertIn("move the file away", failure.getErrorMessage())


class ThreadedStoreTests(unittest.TestCase):
    """The store's own thread: the reactor only waits."""

    @defer.inlineCallbacks
    def test_threaded(self) -> None:
        path = Path(self.mktemp())
        path.mkdir()
        store = ReadingStore(path / "readings.sqlite", reactor)
        yield store.open()
        try:
            ids = []
            for t in range(20):
                stored = yield store.add("m", float(t), True, ["68"], DECODED, "", ["mqtt"])
                ids.append(stored.id)
            self.assertEqual(ids, list(range(1, 21)))
            backlog = yield store.backlog("mqtt")
            self.assertEqual(backlog, (20, 0.0))
        finally:
            yield store.close()
        self.assertIsNone(store._pool)


class KillTests(unittest.TestCase):
    def test_kill_9_loses_at_most_the_reading_being_written(self) -> None:
        path = Path(self.mktemp())
        path.mkdir()
        db = path / "r.sqlite"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, env=env)
        reported = []
        try:
            assert child.stdout is not None
            for line in child.stdout:  # bounded: the writer stops at 100000; we stop at 300
                reported.append(int(line))
                if len(reported) >= 300:
                    break
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()
        connection = sqlite3.connect(str(db))
        try:
            self.assertEqual(connection.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            kept = {i for (i,) in connection.execute("SELECT id FROM reading")}
            queued = {i for (i,) in connection.execute("SELECT reading FROM queue WHERE target = 'mqtt'")}
        finally:
            connection.close()
        self.assertLessEqual(set(reported), kept)
        self.assertEqual(kept, queued, "each reading and its queue row in one transaction")
