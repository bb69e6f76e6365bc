"""Tests for cmegw.readout.store: the SQLite reading store and its delivery queues."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import selectors
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SkipTest, TestCase

from cmegw.testing import stored_readings
from cmegw.readout.store import CSV_COLUMNS, ReadingStore, StoreError

REPO = Path(__file__).resolve().parents[1]
T0 = 1_710_253_380.0  # 2024-03-12 14:23:00 UTC


def meter_readings() -> list[tuple[str, list[str], dict]]:
    return stored_readings(T0)


def result(d: defer.Deferred):
    """The result of an already fired Deferred (the inline store's)."""
    out = []
    d.addBoth(out.append)
    if not out:
        raise AssertionError(f"{d!r} has not fired")
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


class InlineStoreMixin:
    def make_store(self, name="readings.db", **kw) -> ReadingStore:
        self.clock = Clock()
        self.clock.advance(T0 + 3600)
        store = ReadingStore(self.path.parent / name, self.clock, inline=True, **kw)
        result(store.open())
        self.addCleanup(store.close)
        return store

    def setUp(self):
        folder = Path(self.mktemp())
        folder.mkdir()
        self.path = folder / "readings.db"

    def add(self, store, meter="m1", t=T0, ok=True, targets=("mqtt",), records_=None, error=""):
        decoded = {"records": records_ if records_ is not None else [
            {"value": 1.5, "unit": "kWh", "quantity": "Energy", "storage": 0}]}
        return result(store.add(meter, t, ok, ["68aabb16"], decoded, error, list(targets)))


class OpenTests(InlineStoreMixin, TestCase):
    def test_created_in_wal_with_schema(self):
        self.make_store()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        with sqlite3.connect(self.path) as c:
            self.assertEqual(c.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            self.assertEqual(c.execute("PRAGMA user_version").fetchone()[0], 1)
            self.assertEqual(c.execute("PRAGMA auto_vacuum").fetchone()[0], 2)  # incremental
            indices = {row[0] for row in c.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        self.assertLessEqual({"readings_meter_time", "queue_target_time"}, indices)

    def assertOpenFails(self, *words):
        store = ReadingStore(self.path, Clock(), inline=True)
        e = self.assertRaises(StoreError, result, store.open())
        for word in (str(self.path),) + words:
            self.assertIn(word, str(e))
        self.assertRaises(StoreError, result, store.pending("mqtt", 1))

    def test_corrupt_file(self):
        self.path.write_bytes(b"this is no database, it is a text file\n" * 200)
        self.assertOpenFails("not a readable reading store", "move it aside")

    def test_other_sqlite_file(self):
        with sqlite3.connect(self.path) as c:
            c.execute("CREATE TABLE photos (x)")
        self.assertOpenFails("not a reading store")

    def test_newer_schema(self):
        with sqlite3.connect(self.path) as c:
            c.execute("PRAGMA user_version = 99")
        self.assertOpenFails("newer cmegw", "schema 99")

    def test_unwritable_folder(self):
        if os.geteuid() == 0:
            raise SkipTest("root may write anywhere")
        self.path.parent.chmod(0o500)
        self.addCleanup(self.path.parent.chmod, 0o700)
        self.assertOpenFails("may write")

    def test_folder_is_a_file(self):
        self.path.parent.joinpath("state").write_text("")
        self.path = self.path.parent / "state" / "readings.db"
        self.assertOpenFails("cannot create the reading store", "may write")

    def test_reopen_keeps_readings(self):
        store = self.make_store()
        self.add(store)
        result(store.close())
        again = self.make_store()
        self.assertEqual(len(result(again.readings())), 1)

    def test_threaded_store_opens_again(self):
        store = ReadingStore(self.path, reactor)
        self.addCleanup(store.close)
        d = store.open()
        d.addCallback(lambda _: store.close())
        d.addCallback(lambda _: store.open())
        d.addCallback(lambda _: store.meters())
        d.addCallback(self.assertEqual, [])
        return d


class QueueTests(InlineStoreMixin, TestCase):
    def test_pending_oldest_first_by_time_then_id(self):
        store = self.make_store()
        for t in (30, 10, 20, 10):
            self.add(store, t=T0 + t)
        pending = result(store.pending("mqtt", 10))
        self.assertEqual([(r.time - T0, r.id) for r in pending], [(10, 2), (10, 4), (20, 3), (30, 1)])
        self.assertEqual([r.id for r in result(store.pending("mqtt", 2))], [2, 4])
        self.assertEqual([r.id for r in result(store.pending("mqtt", 10, after_id=4))], [3, 1])
        self.assertEqual(result(store.pending("mqtt", 10, after_id=1)), [])

    def test_failed_reads_are_kept_not_queued(self):
        store = self.make_store()
        bad = self.add(store, ok=False, error="no answer from primary 5", records_=[])
        self.assertFalse(bad.ok)
        self.assertEqual(result(store.backlog("mqtt")), (0, None))
        self.assertEqual(result(store.last("m1")).error, "no answer from primary 5")

    def test_delivered_backlog_and_drop(self):
        store = self.make_store()
        a = self.add(store, t=T0 + 1, targets=("mqtt", "push.1", "mqtt"))
        b = self.add(store, t=T0 + 2, targets=("mqtt",))
        self.assertEqual(result(store.backlogs()), {"mqtt": (2, T0 + 1), "push.1": (1, T0 + 1)})
        result(store.delivered("mqtt", [a.id]))
        self.assertEqual(result(store.backlog("mqtt")), (1, T0 + 2))
        self.assertEqual(result(store.backlog("push.1")), (1, T0 + 1))
        self.assertEqual(result(store.drop_target("push.1")), 1)
        self.assertEqual(result(store.backlogs()), {"mqtt": (1, T0 + 2)})
        self.assertEqual([r.id for r in result(store.pending("mqtt", 5))], [b.id])

    def test_pending_reading_is_whole(self):
        store = self.make_store()
        name, telegrams, decoded = meter_readings()[0]
        result(store.add(name, T0, True, telegrams, decoded, "", ["mqtt"]))
        [r] = result(store.pending("mqtt", 1))
        self.assertEqual((r.meter, r.time, r.ok, r.telegrams), (name, T0, True, tuple(telegrams)))
        self.assertEqual(r.decoded, json.loads(json.dumps(decoded)))

    def test_not_serializable(self):
        store = self.make_store()
        d = store.add("m1", T0, True, [], {"value": object()}, "", ["mqtt"])
        self.assertIn("m1", str(self.failureResultOf(d, StoreError).value))


class HistoryTests(InlineStoreMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.store = self.make_store()
        for i in range(10):
            self.add(self.store, meter="heat" if i % 2 else "water", t=T0 + i, ok=i != 7, error="" if i != 7 else "timeout")

    def test_readings_filters_newest_last(self):
        found = result(self.store.readings("heat", limit=3))
        self.assertEqual([r.time - T0 for r in found], [5, 7, 9])
        found = result(self.store.readings(None, since=T0 + 2, until=T0 + 5, limit=100))
        self.assertEqual([r.time - T0 for r in found], [2, 3, 4])
        found = result(self.store.readings("heat", limit=10, ok_only=True))
        self.assertEqual([r.time - T0 for r in found], [1, 3, 5, 9])

    def test_last_recent_results_meters(self):
        self.assertEqual(result(self.store.last("heat")).time, T0 + 9)
        self.assertIsNone(result(self.store.last("gas")))
        self.assertEqual(result(self.store.recent_results("heat", 3)), [True, False, True])
        self.assertEqual(result(self.store.meters()), ["heat", "water"])


class ExportTests(InlineStoreMixin, TestCase):
    def test_csv(self):
        store = self.make_store()
        name, telegrams, decoded = meter_readings()[0]
        result(store.add(name, T0, True, telegrams, decoded, "", []))
        result(store.add("=HYPERLINK(1)", T0 + 60, False, [], {}, "no answer", []))
        rows = list(csv.DictReader(io.StringIO(result(store.export_csv()))))
        self.assertEqual(tuple(rows[0]), CSV_COLUMNS)
        self.assertEqual(len(rows), len(decoded["records"]) + 1)
        energy = rows[1]
        self.assertEqual((energy["meter"], energy["time_utc"], energy["ok"], energy["register"]),
                         ("meter-1", "2024-03-12 14:23:00", "1", "2"))
        self.assertEqual((energy["quantity"], energy["value"], energy["unit"], energy["storage"]),
                         ("Energy", str(decoded["records"][1]["value"]), decoded["records"][1]["unit"], "0"))
        failed = rows[-1]
        self.assertEqual((failed["meter"], failed["ok"], failed["register"], failed["error"]),
                         ("'=HYPERLINK(1)", "0", "", "no answer"))
        only = list(csv.DictReader(io.StringIO(result(store.export_csv(name, since=T0, until=T0 + 1)))))
        self.assertEqual(len(only), len(decoded["records"]))

    def test_json(self):
        store = self.make_store()
        name, telegrams, decoded = meter_readings()[3]
        result(store.add(name, T0, True, telegrams, decoded, "", []))
        [doc] = result(store.export_json(name))
        self.assertEqual(json.loads(json.dumps(doc)), doc)
        self.assertEqual((doc["id"], doc["meter"], doc["time"], doc["time_utc"], doc["ok"]),
                         (1, name, T0, "2024-03-12T14:23:00Z", True))
        self.assertEqual(doc["telegrams"], telegrams)
        self.assertEqual(len(doc["decoded"]["records"]), len(decoded["records"]))
        self.assertEqual(result(store.export_json("other")), [])


class RetentionTests(InlineStoreMixin, TestCase):
    def fill(self, store, n):
        meters = meter_readings()
        for i in range(n):
            name, telegrams, decoded = meters[i % len(meters)]
            result(store.add(name, T0 + i * 60, True, telegrams, decoded, "", ["mqtt"]))

    def test_by_age(self):
        store = self.make_store()
        self.fill(store, 20)
        removed = result(store.prune(max_age_s=600, max_bytes=None, now=T0 + 20 * 60))
        self.assertEqual(removed, 10)
        left = result(store.readings(limit=None))
        self.assertEqual(left[0].time, T0 + 10 * 60)
        self.assertEqual(result(store.backlog("mqtt")), (10, T0 + 10 * 60))
        self.assertEqual(result(store.prune(600, None, now=T0 + 20 * 60)), 0)

    def test_by_size_file_shrinks(self):
        store = self.make_store()
        self.fill(store, 400)
        with sqlite3.connect(self.path) as c:
            before = c.execute("PRAGMA page_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0]
        c.close()
        limit = before // 3
        removed = result(store.prune(None, limit))
        after = os.path.getsize(self.path)
        wal = Path(f"{self.path}-wal")
        self.assertLessEqual(after, limit)
        self.assertGreater(after, limit // 2)
        self.assertEqual(wal.stat().st_size if wal.exists() else 0, 0)
        self.assertEqual(store.stats.bytes, after)
        left = result(store.readings(limit=None))
        self.assertEqual(len(left), 400 - removed)
        self.assertGreater(len(left), 50)  # it deleted no more than it had to, roughly
        self.assertEqual(left[-1].time, T0 + 399 * 60)
        self.assertEqual(result(store.backlog("mqtt"))[0], len(left))
        with sqlite3.connect(self.path) as c:
            self.assertEqual(c.execute("PRAGMA integrity_check").fetchone()[0], "ok")

    def test_by_size_below_empty(self):
        store = self.make_store()
        self.fill(store, 5)
        self.assertEqual(result(store.prune(None, 0)), 5)
        self.assertEqual(result(store.backlogs()), {})


class FullDiskTests(InlineStoreMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.connections = []

        def connect(*args, **kw):
            c = sqlite3.connect(*args, **kw)
            self.connections.append(c)
            return c

        self.store = self.make_store(connect=connect, hold_limit=5)
        self.db = self.connections[0]

    def fill_disk(self):
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        self.db.execute(f"PRAGMA max_page_count = {pages}")

    def test_held_in_memory_then_written(self):
        self.fill_disk()
        big = [{"value": i, "quantity": os.urandom(150).hex()} for i in range(20)]
        kept = []
        for i in range(40):
            r = self.add(self.store, t=T0 + i, records_=big)
            kept.append(r)
            if r.id == 0:
                break
        self.assertEqual(kept[-1].id, 0)
        self.assertIn(f"the disk holding {self.path} is full: 1 reading kept in memory, they are written when space is free", self.store.problem)
        written = len(kept) - 1
        self.add(self.store, t=T0 + 100, records_=big)
        self.assertEqual((self.store.stats.held, self.store.stats.write_failures), (2, 2))
        self.assertEqual(self.store.stats.written, written)
        self.db.execute("PRAGMA max_page_count = 1000000")
        self.assertEqual(result(self.store.flush()), 0)
        self.assertIsNone(self.store.problem)
        times = [r.time - T0 for r in result(self.store.pending("mqtt", 100))]
        self.assertEqual(times, list(range(written + 1)) + [100])

    def test_hold_is_bounded(self):
        self.fill_disk()
        big = [{"value": 0, "quantity": os.urandom(1500).hex()}]
        for i in range(12):
            self.add(self.store, t=T0 + i, records_=big)
        self.assertEqual(self.store.stats.held, 5)
        self.assertGreater(self.store.stats.dropped, 0)
        self.assertIn("older ones were dropped", self.store.problem)
        self.db.execute("PRAGMA max_page_count = 1000000")
        self.add(self.store, t=T0 + 50, records_=big)
        self.assertIsNone(self.store.problem)
        self.assertEqual(result(self.store.pending("mqtt", 100))[-1].time, T0 + 50)


class ThreadedTests(TestCase):
    """The production mode: one connection on the store's own thread, Deferreds fired by the reactor."""

    def setUp(self):
        folder = Path(self.mktemp())
        folder.mkdir()
        self.path = folder / "readings.db"

    def store(self):
        store = ReadingStore(self.path, reactor)
        self.addCleanup(store.close)
        return store

    def threads(self):
        return [t for t in threading.enumerate() if "cmegw-reading-store" in t.name]

    @defer.inlineCallbacks
    def test_backlog_survives_restart(self):
        store = self.store()
        yield store.open()
        self.assertEqual(len(self.threads()), 1)
        adds = [store.add("m1", T0 + i, True, ["68"], {"records": []}, "", ["mqtt", "push.1"])
                for i in range(20)]
        closing = store.close()  # waits for the queued adds
        self.assertEqual(len((yield defer.gatherResults(adds))), 20)
        yield closing
        self.assertEqual(self.threads(), [])
        yield self.assertFailure(store.add("m1", T0, True, [], {}, "", []), StoreError)
        again = self.store()
        yield again.open()
        self.assertEqual((yield again.backlogs()), {"mqtt": (20, T0), "push.1": (20, T0)})
        pending = yield again.pending("mqtt", 5, after_id=3)
        self.assertEqual([r.id for r in pending], [4, 5, 6, 7, 8])
        yield again.delivered("mqtt", [r.id for r in pending])
        self.assertEqual((yield again.backlog("mqtt")), (15, T0))

    def test_pool_of_one_thread(self):
        self.assertRaises(ValueError, ReadingStore, self.path, reactor, ThreadPool(1, 4))

    @defer.inlineCallbacks
    def test_open_failure_stops_thread(self):
        self.path.write_bytes(b"garbage" * 1000)
        store = ReadingStore(self.path, reactor)
        yield self.assertFailure(store.open(), StoreError)
        self.assertEqual(self.threads(), [])


_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from cmegw.readout.store import ReadingStore
    store = ReadingStore(Path(sys.argv[1]), None, inline=True)
    store.open()
    start = int(sys.argv[2])
    decoded = {"records": [{"value": i * 1.5, "unit": "kWh", "quantity": "Energy " + "x" * 40}
                           for i in range(12)]}
    for i in range(start, start + 100000):
        out = []
        store.add(f"m{i % 4}", 1.7e9 + i, True, ["68" * 60], decoded, "", ["mqtt"]).addBoth(out.append)
        print(out[0].id, flush=True)
""")


class KillTests(TestCase):
    """kill -9 at a random moment loses no committed reading and never the file."""

    ROUNDS = 3
    DEADLINE = 30.0

    def run_and_kill(self, path: Path, start: int, stop_after: int) -> list[int]:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(start)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        ids, buffer = [], b""
        deadline = time.monotonic() + self.DEADLINE
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(child.stdout, selectors.EVENT_READ)
                while len(ids) < stop_after:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.fail(f"the child reported {len(ids)} readings in {self.DEADLINE} s")
                    if not sel.select(left):
                        continue
                    chunk = os.read(child.stdout.fileno(), 65536)
                    if not chunk:
                        self.fail(f"the child ended: {child.stderr.read().decode()}")
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    ids += [int(line) for line in lines]
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(10)
            child.stdout.close()
            child.stderr.close()
        self.assertEqual(child.returncode, -signal.SIGKILL)
        return ids

    def test_kill_9(self):
        folder = Path(self.mktemp())
        folder.mkdir()
        path = folder / "readings.db"
        rng = random.Random()
        reported: list[int] = []
        for round_ in range(self.ROUNDS):
            reported += self.run_and_kill(path, round_ * 100000, rng.randint(5, 120))
            with sqlite3.connect(path) as c:
                self.assertEqual(c.execute("PRAGMA integrity_check").fetchone()[0], "ok")
                stored = {rid for (rid,) in c.execute("SELECT id FROM readings")}
                queued = {rid for (rid,) in c.execute("SELECT reading FROM queue WHERE target='mqtt'")}
            c.close()
            self.assertLessEqual(set(reported), stored)
            self.assertLessEqual(len(stored), len(reported) + round_ + 1)
            self.assertEqual(queued, stored)
        store = ReadingStore(path, Clock(), inline=True)
        result(store.open())
        self.addCleanup(store.close)
        self.assertEqual(result(store.backlog("mqtt"))[0], len(stored))
