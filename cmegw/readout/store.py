# -*- test-case-name: tests.test_readout_store -*-
"""
The reading store: every readout kept in one SQLite file, with one delivery
queue per target.

The file is in WAL mode with ``synchronous = FULL``: a transaction that
returned is on the disk, so a kill -9 or a power cut loses at most the
reading being written, never the file.  All database work runs on one
thread of the store's own thread pool (one connection, used from that
thread only); the reactor only waits for Deferreds.  With ``inline=True``
(the tests' mode) the work runs at once on the calling thread.

A good reading is added together with one queue row per delivery target in
one transaction; a target's row goes when the target acknowledged the
reading (`delivered`).  Retention removes the oldest readings, delivered or
not, so a target's backlog is bounded by it.  When the disk is full, new
readings are held in memory (at most `MEMORY_LIMIT`) and written with the
next add that succeeds; `problem` says so meanwhile.
"""

from __future__ import annotations

import collections
import json
import sqlite3
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import attrs
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cmegw.readout.reading import StoredReading
from cmegw.stats import Counters

log = Logger(namespace="cmegw.readout.store")

SCHEMA_VERSION = 1
#: Readings held in memory while the disk is full.
MEMORY_LIMIT = 1000
#: Readings removed per prune transaction (keeps each one short).
PRUNE_BATCH = 500

_SCHEMA = """
CREATE TABLE reading (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    meter TEXT NOT NULL,
    time REAL NOT NULL,
    ok INTEGER NOT NULL,
    telegrams TEXT NOT NULL,
    decoded TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX reading_meter_time ON reading (meter, time);
CREATE INDEX reading_time ON reading (time);
CREATE TABLE queue (
    target TEXT NOT NULL,
    reading INTEGER NOT NULL REFERENCES reading (id) ON DELETE CASCADE,
    time REAL NOT NULL,
    PRIMARY KEY (target, reading)
) WITHOUT ROWID;
CREATE INDEX queue_target_time ON queue (target, time, reading);
"""

T = TypeVar("T")


class StoreError(Exception):
    """The reading store cannot be used; the message names the file and what to do."""


@attrs.define
class StoreStatistics(Counters):
    """What the pages and /metrics show of the store."""

    readings_written: int = 0
    write_failures: int = 0
    file_bytes: int = 0
    held_in_memory: int = 0


def _is_full(error: BaseException) -> bool:
    text = str(error).lower()
    return "full" in text or getattr(error, "errno", None) == 28


class ReadingStore:
    """Readings in SQLite, a queue per delivery target; see the module's docstring."""

    def __init__(self, path: Path, reactor: Any, inline: bool = False) -> None:
        self.path = Path(path)
        self.reactor = reactor
        self.inline = inline
        self.problem = ""
        self.stats = StoreStatistics()
        self._db: sqlite3.Connection | None = None
        self._pool: ThreadPool | None = None
        #: Readings waiting for disk space: (meter, time, ok, telegrams, decoded, error, targets).
        self._held: collections.deque[tuple[Any, ...]] = collections.deque()

    # -- running work on the store's thread ---------------------------------------------

    def _run(self, work: Callable[..., T], *args: Any) -> defer.Deferred:
        if self.inline:
            return defer.maybeDeferred(work, *args)
        if self._pool is None:
            return defer.fail(StoreError(f"the reading store {self.path} is not open"))
        return threads.deferToThreadPool(self.reactor, self._pool, work, *args)

    def open(self) -> defer.Deferred:
        if not self.inline and self._pool is None:
            self._pool = ThreadPool(1, 1, name="cmegw-readings")
            self._pool.start()
        return self._run(self._open)

    def _open(self) -> None:
        where = f"the reading store {self.path}"
        if not self.path.parent.is_dir():
            raise StoreError(f"{where} cannot be made: the folder {self.path.parent} does not exist")
        try:
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            new = db.execute("PRAGMA user_version").fetchone()[0] == 0
            if new:
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            if new:
                with db:
                    db.executescript("BEGIN;" + _SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{where} was written by a newer cmegw (schema {version}); "
                                 "update cmegw or move the file away")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"{where} is damaged ({check}); move it away, a new one is made at the next start")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{where} cannot be opened: {e} (check its permissions and the disk; "
                             "move the file away to start a new one)") from None
        self._db = db
        self._measure()

    def close(self) -> defer.Deferred:
        d = self._run(self._close) if (self._pool is not None or self.inline) else defer.succeed(None)

        def stop(result: Any) -> Any:
            if self._pool is not None:
                self._pool.stop()
                self._pool = None
            return result

        return d.addBoth(stop)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the reading store {self.path} is not open")
        return self._db

    def _measure(self) -> None:
        pages, size = (self.db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        wal = self.path.with_name(self.path.name + "-wal")
        self.stats.file_bytes = pages * size + (wal.stat().st_size if wal.exists() else 0)

    # -- adding and delivering ----------------------------------------------------------

    def add(self, meter: str, time: float, ok: bool, telegrams: Sequence[str], decoded: Mapping[str, Any],
            error: str, targets: Sequence[str]) -> defer.Deferred:
        """Keep one readout; a good one goes into each target's queue.  Fires with the `StoredReading`."""
        entry = (meter, time, ok, tuple(telegrams), dict(decoded), error, tuple(targets) if ok else ())
        return self._run(self._add, entry)

    def _add(self, entry: tuple[Any, ...]) -> StoredReading:
        self._held.append(entry)
        stored = None
        try:
            while self._held:
                stored = self._write(self._held[0])
                self._held.popleft()
        except (sqlite3.OperationalError, OSError) as e:
            self.stats.write_failures += 1
            if not _is_full(e):
                self._held.pop()
                raise StoreError(f"the reading store {self.path} cannot be written: {e}") from None
            while len(self._held) > MEMORY_LIMIT:
                self._held.popleft()
            self.problem = (f"the disk holding {self.path} is full: {len(self._held)} readings kept in memory; "
                            "they are written when space is free")
            self.stats.held_in_memory = len(self._held)
            meter, time, ok, telegrams, decoded, error, _ = entry
            return StoredReading(0, meter, time, ok, telegrams, decoded, error)
        self.problem = ""
        self.stats.held_in_memory = 0
        self._measure()
        assert stored is not None
        return stored

    def _write(self, entry: tuple[Any, ...]) -> StoredReading:
        meter, time, ok, telegrams, decoded, error, targets = entry
        db = self.db
        with db:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(
                "INSERT INTO reading (meter, time, ok, telegrams, decoded, error) VALUES (?, ?, ?, ?, ?, ?)",
                (meter, time, int(ok), json.dumps(list(telegrams)), json.dumps(decoded, separators=(",", ":"),
                                                                               default=str), error))
            rid = cursor.lastrowid
            db.executemany("INSERT INTO queue (target, reading, time) VALUES (?, ?, ?)",
                           [(target, rid, time) for target in targets])
        self.stats.readings_written += 1
        return StoredReading(int(rid or 0), meter, time, ok, telegrams, decoded, error)

    def pending(self, target: str, limit: int, after_id: int = 0) -> defer.Deferred:
        """A target's undelivered readings, oldest first."""
        return self._run(self._select, "SELECT r.* FROM queue q JOIN reading r ON r.id = q.reading "
                         "WHERE q.target = ? AND q.reading > ? ORDER BY q.time, q.reading LIMIT ?",
                         (target, after_id, limit))

    def delivered(self, target: str, ids: Sequence[int]) -> defer.Deferred:
        def work() -> None:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("DELETE FROM queue WHERE target = ? AND reading = ?",
                                    [(target, i) for i in ids])

        return self._run(work)

    def backlog(self, target: str) -> defer.Deferred:
        """(count, time of the oldest) of a target's queue."""
        return self.backlogs().addCallback(lambda all_: all_.get(target, (0, None)))

    def backlogs(self) -> defer.Deferred:
        def work() -> dict[str, tuple[int, float | None]]:
            rows = self.db.execute("SELECT target, count(*), min(time) FROM queue GROUP BY target").fetchall()
            return {target: (count, oldest) for target, count, oldest in rows}

        return self._run(work)

    def drop_target(self, target: str) -> defer.Deferred:
        """Forget the queue of a target taken out of the configuration."""
        def work() -> None:
            with self.db:
                self.db.execute("DELETE FROM queue WHERE target = ?", (target,))

        return self._run(work)

    # -- reading back ---------------------------------------------------------------------

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[StoredReading]:
        return [_row(row) for row in self.db.execute(sql, args).fetchall()]

    def readings(self, meter: str | None, since: float | None = None, until: float | None = None,
                 limit: int = 1000, ok_only: bool = False) -> defer.Deferred:
        """The newest `limit` readings of a meter (all meters' with None) in a time range, oldest first."""
        where, args = _where(meter, since, until, ok_only)
        sql = f"SELECT * FROM (SELECT * FROM reading{where} ORDER BY time DESC, id DESC LIMIT ?) ORDER BY time, id"
        return self._run(self._select, sql, (*args, limit))

    def last(self, meter: str, ok_only: bool = False) -> defer.Deferred:
        d = self.readings(meter, limit=1, ok_only=ok_only)
        return d.addCallback(lambda found: found[-1] if found else None)

    def recent_results(self, meter: str, count: int) -> defer.Deferred:
        """The last `count` reads' outcomes (True: good), newest first."""
        def work() -> list[bool]:
            rows = self.db.execute("SELECT ok FROM reading WHERE meter = ? ORDER BY time DESC, id DESC LIMIT ?",
                                   (meter, count)).fetchall()
            return [bool(ok) for (ok,) in rows]

        return self._run(work)

    def meters(self) -> defer.Deferred:
        return self._run(lambda: [m for (m,) in self.db.execute("SELECT DISTINCT meter FROM reading ORDER BY meter")])

    def count(self) -> defer.Deferred:
        return self._run(lambda: self.db.execute("SELECT count(*) FROM reading").fetchone()[0])

    def export_json(self, meter: str | None, since: float | None = None, until: float | None = None) -> defer.Deferred:
        """Readings as plain objects: id, meter, time (epoch and ISO UTC), ok, error, telegrams, decoded."""
        d = self.readings(meter, since, until, limit=-1)
        return d.addCallback(lambda found: [plain_reading(r) for r in found])

    def export_csv(self, meter: str | None, since: float | None = None, until: float | None = None) -> defer.Deferred:
        """One row per record (a failed read: one row with its error), for a spreadsheet."""
        import csv
        import io

        def write(found: list[StoredReading]) -> str:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(["reading_id", "meter", "time_utc", "ok", "quantity", "value", "unit", "storage",
                             "tariff", "subunit", "function", "description", "error"])
            for r in found:
                when = iso_utc(r.time)
                records = r.decoded.get("records") or []
                if not records:
                    writer.writerow([r.id, r.meter, when, int(r.ok), "", "", "", "", "", "", "", "", r.error])
                for rec in records:
                    writer.writerow([r.id, r.meter, when, int(r.ok), rec.get("quantity", ""), rec.get("value"),
                                     rec.get("unit", ""), rec.get("storage", ""), rec.get("tariff", ""),
                                     rec.get("subunit", ""), rec.get("function", ""), rec.get("description", ""),
                                     r.error])
            return out.getvalue()

        return self.readings(meter, since, until, limit=-1).addCallback(write)

    # -- retention ---------------------------------------------------------------------------

    def prune(self, max_age: float | None, max_bytes: int | None, now: float | None = None) -> defer.Deferred:
        """
        Remove the oldest readings (and their queue rows) until none is older
        than `max_age` seconds and the file (pages in use, without the free
        pages that an incremental vacuum gives back) is at most `max_bytes`.
        Fires with how many went.
        """
        when = self.reactor.seconds() if now is None else now
        return self._run(self._prune, max_age, max_bytes, when)

    def _used_bytes(self) -> int:
        db = self.db
        pages, free, size = (db.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size

    def _prune(self, max_age: float | None, max_bytes: int | None, now: float) -> int:
        db = self.db
        removed = 0
        if max_age is not None:
            with db:
                removed += db.execute("DELETE FROM reading WHERE time < ?", (now - max_age,)).rowcount
        for _ in range(100000):
            if max_bytes is None or self._used_bytes() <= max_bytes:
                break
            with db:
                gone = db.execute("DELETE FROM reading WHERE id IN (SELECT id FROM reading ORDER BY time, id "
                                  "LIMIT ?)", (PRUNE_BATCH,)).rowcount
            if not gone:
                break
            removed += gone
        if removed:
            db.executescript("PRAGMA incremental_vacuum;")  # execute() would step it once: one page
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._measure()
        return removed


def _where(meter: str | None, since: float | None, until: float | None, ok_only: bool) -> tuple[str, tuple]:
    clauses, args = [], []
    if meter is not None:
        clauses.append("meter = ?")
        args.append(meter)
    if since is not None:
        clauses.append("time >= ?")
        args.append(since)
    if until is not None:
        clauses.append("time <= ?")
        args.append(until)
    if ok_only:
        clauses.append("ok = 1")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _row(row: tuple[Any, ...]) -> StoredReading:
    rid, meter, time, ok, telegrams, decoded, error = row
    return StoredReading(rid, meter, time, bool(ok), tuple(json.loads(telegrams)), json.loads(decoded), error)


def iso_utc(time: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(time, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def plain_reading(reading: StoredReading) -> dict[str, Any]:
    return {"id": reading.id, "meter": reading.meter, "time": reading.time, "time_utc": iso_utc(reading.time),
            "ok": reading.ok, "error": reading.error, "telegrams": list(reading.telegrams), **{
                k: v for k, v in reading.decoded.items()}}
