# -*- test-case-name: tests.test_readout_store -*-
"""
The reading store's side on its own thread: one SQLite connection, the
schema, the queries and the readings held in memory while the disk refuses
them.  Everything here is synchronous and runs on one thread;
`cmegw.readout.store.ReadingStore` is the Deferred face the rest uses.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sqlite3
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs

from cmegw.readout.reading import StoredReading, StoreError

#: PRAGMA user_version of the schema this code writes.
SCHEMA_VERSION = 1
#: The WAL is checkpointed at this many pages and truncated to this size after a checkpoint.
WAL_AUTOCHECKPOINT = 256
JOURNAL_SIZE_LIMIT = 1 << 20
#: A prune by size deletes in at most this many rounds (each at least one reading).
PRUNE_ROUNDS = 64

_SCHEMA = """
CREATE TABLE readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    meter TEXT NOT NULL,
    time REAL NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    body BLOB NOT NULL  -- zlib(JSON {"telegrams": [hex, ...], "decoded": {...}})
);
CREATE INDEX readings_meter_time ON readings (meter, time);
CREATE INDEX readings_time ON readings (time);
CREATE TABLE queue (
    target TEXT NOT NULL,
    reading INTEGER NOT NULL,
    time REAL NOT NULL,  -- the reading's time: the queue is drained in this order
    PRIMARY KEY (target, reading)
) WITHOUT ROWID;
CREATE INDEX queue_target_time ON queue (target, time, reading);
"""

_COLUMNS = "r.id, r.meter, r.time, r.ok, r.error, r.body"


@attrs.frozen
class Outcome:
    """What an add or a flush did, for the statistics and `problem` on the reactor's side."""

    reading: StoredReading | None
    written: int
    failures: int
    held: int
    dropped: int
    problem: str | None
    bytes: int


@attrs.frozen
class _Held:
    reading: StoredReading
    body: bytes
    targets: tuple[str, ...]


def _is_full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno == errno.ENOSPC
    return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(e)


def _reading(row: tuple) -> StoredReading:
    rid, meter, time, ok, error, body = row
    doc = json.loads(zlib.decompress(body))
    return StoredReading(rid, meter, time, bool(ok), tuple(doc["telegrams"]), doc["decoded"], error)


class Database:
    """The connection and the held readings; every method on the store's one thread."""

    def __init__(self, path: Path, hold_limit: int, connect: Callable[..., sqlite3.Connection] | None = None) -> None:
        self.path = path
        self._connect = connect or sqlite3.connect
        self.hold_limit = hold_limit
        self.held: deque[_Held] = deque()
        self.dropped = 0
        self.problem: str | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the reading store {self.path} is not open")
        return self._conn

    # -- opening

    def open(self) -> int:
        """Open or create the file; fires with its size."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as e:
            raise StoreError(
                f"cannot create the reading store {self.path}: {e.strerror}: check that its folder "
                f"exists and that the gateway's user may write there") from None
        try:
            self._conn = self._connect(self.path, isolation_level=None, timeout=5.0)
            self._setup()
        except (sqlite3.Error, StoreError) as e:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            raise (e if isinstance(e, StoreError) else self._open_error(e)) from None
        return self.file_bytes()

    def _open_error(self, e: sqlite3.Error) -> StoreError:
        text = str(e)
        if _is_full(e):
            return StoreError(f"the disk holding the reading store {self.path} is full: free some space "
                              f"(or shorten the readings' retention), then restart the gateway")
        if "not a database" in text or "malformed" in text or type(e) is sqlite3.DatabaseError:
            return StoreError(f"{self.path} is not a readable reading store ({text}): move it aside "
                              f"(the gateway then starts an empty one) or restore it from a backup")
        return StoreError(f"cannot open the reading store {self.path} ({text}): check that the gateway's "
                          f"user may read and write the file and its folder, and that no other "
                          f"program holds it")

    def _setup(self) -> None:
        c = self.conn
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer cmegw (schema {version}, this one knows "
                f"{SCHEMA_VERSION}): run the newer cmegw again, or move the file aside")
        if version == 0:
            tables = c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StoreError(f"{self.path} is an SQLite file but not a reading store: move it aside "
                                 f"or give the readings another file")
            c.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused write-ahead logging (journal mode {mode}): "
                             f"put the readings on a local file system")
        c.execute("PRAGMA synchronous = FULL")
        c.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        c.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
        if version == 0:
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> int:
        """Write what is held if the disk takes it, close; returns how many held readings were lost."""
        if self._conn is None:
            return 0
        try:
            self.flush()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        finally:
            self._conn.close()
            self._conn = None
        lost = len(self.held)
        self.held.clear()
        return lost

    # -- writing

    def _transaction(self) -> "_Transaction":
        return _Transaction(self.conn)

    def add(self, reading: StoredReading, body: bytes, targets: tuple[str, ...]) -> Outcome:
        self.held.append(_Held(reading, body, targets))
        while len(self.held) > self.hold_limit:
            self.held.popleft()
            self.dropped += 1
        return self._write_held(reading)

    def flush(self) -> Outcome:
        return self._write_held(None)

    def _write_held(self, new: StoredReading | None) -> Outcome:
        written = failures = 0
        result = new
        while self.held:
            held = self.held[0]
            try:
                rid = self._insert(held)
            except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
                raise
            except (sqlite3.DatabaseError, OSError) as e:
                failures += 1
                self.problem = self._write_problem(e)
                break
            self.held.popleft()
            written += 1
            if held.reading is new:
                result = attrs.evolve(new, id=rid)
        else:
            self.problem = None
        return Outcome(result, written, failures, len(self.held), self.dropped, self.problem,
                       self.file_bytes())

    def _write_problem(self, e: BaseException) -> str:
        n = f"{len(self.held)} reading" + ("" if len(self.held) == 1 else "s")
        dropped = f" ({self.dropped} older ones were dropped)" if self.dropped else ""
        if _is_full(e):
            return (f"the disk holding {self.path} is full: {n} kept in memory{dropped}, "
                    f"they are written when space is free")
        return (f"writing readings to {self.path} fails ({e}): {n} kept in memory{dropped}, "
                f"they are written when writing works again")

    def _insert(self, held: _Held) -> int:
        r = held.reading
        with self._transaction() as c:
            cursor = c.execute("INSERT INTO readings (meter, time, ok, error, body) VALUES (?, ?, ?, ?, ?)",
                               (r.meter, r.time, int(r.ok), r.error, held.body))
            rid = cursor.lastrowid
            assert rid is not None
            c.executemany("INSERT OR IGNORE INTO queue (target, reading, time) VALUES (?, ?, ?)",
                          [(target, rid, r.time) for target in held.targets])
        return rid

    def file_bytes(self) -> int:
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += os.stat(f"{self.path}{suffix}").st_size
            except OSError:
                pass
        return size

    # -- queues

    def pending(self, target: str, limit: int, after_id: int) -> list[StoredReading]:
        where, args = "q.target = ?", [target]
        if after_id:
            found = self.conn.execute("SELECT time FROM readings WHERE id = ?", (after_id,)).fetchone()
            if found is None:
                where += " AND q.reading > ?"
                args.append(after_id)
            else:
                where += " AND (q.time, q.reading) > (?, ?)"
                args += [found[0], after_id]
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM queue q JOIN readings r ON r.id = q.reading "
            f"WHERE {where} ORDER BY q.time, q.reading LIMIT ?", (*args, limit))
        return [_reading(row) for row in rows]

    def delivered(self, target: str, ids: tuple[int, ...]) -> None:
        with self._transaction() as c:
            c.executemany("DELETE FROM queue WHERE target = ? AND reading = ?", [(target, i) for i in ids])

    def backlog(self, target: str) -> tuple[int, float | None]:
        count, oldest = self.conn.execute(
            "SELECT count(*), min(time) FROM queue WHERE target = ?", (target,)).fetchone()
        return count, oldest

    def backlogs(self) -> dict[str, tuple[int, float | None]]:
        rows = self.conn.execute("SELECT target, count(*), min(time) FROM queue GROUP BY target")
        return {target: (count, oldest) for target, count, oldest in rows}

    def drop_target(self, target: str) -> int:
        with self._transaction() as c:
            return c.execute("DELETE FROM queue WHERE target = ?", (target,)).rowcount

    # -- history

    def readings(self, meter: str | None, since: float | None, until: float | None,
                 limit: int | None, ok_only: bool) -> list[StoredReading]:
        clauses, args = [], []
        for clause, value in (("r.meter = ?", meter), ("r.time >= ?", since), ("r.time < ?", until)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        if ok_only:
            clauses.append("r.ok = 1")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        if limit is None:
            query = f"SELECT {_COLUMNS} FROM readings r {where} ORDER BY r.time, r.id"
            return [_reading(row) for row in self.conn.execute(query, args)]
        query = f"SELECT {_COLUMNS} FROM readings r {where} ORDER BY r.time DESC, r.id DESC LIMIT ?"
        return [_reading(row) for row in self.conn.execute(query, (*args, limit))][::-1]

    def recent_results(self, meter: str, n: int) -> list[bool]:
        rows = self.conn.execute(
            "SELECT ok FROM readings WHERE meter = ? ORDER BY time DESC, id DESC LIMIT ?", (meter, n))
        return [bool(ok) for (ok,) in rows]

    def meters(self) -> list[str]:
        return [meter for (meter,) in self.conn.execute("SELECT DISTINCT meter FROM readings ORDER BY meter")]

    # -- retention

    def used_bytes(self) -> int:
        c = self.conn
        pages = c.execute("PRAGMA page_count").fetchone()[0] - c.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * c.execute("PRAGMA page_size").fetchone()[0]

    def prune(self, now: float, max_age_s: float | None, max_bytes: int | None) -> tuple[int, int]:
        """Returns (readings deleted, file bytes after)."""
        removed = 0
        if max_age_s is not None:
            removed += self._delete_before(now - max_age_s)
        if max_bytes is not None:
            for _ in range(PRUNE_ROUNDS):
                used = self.used_bytes()
                count = self.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
                if used <= max_bytes or count == 0:
                    break
                n = min(count, max(1, math.ceil((used - max_bytes) * count / used * 1.05)))
                removed += self._delete_oldest(n)
        if removed:
            # execute() steps once, which frees one page; executescript() runs it to the end
            self.conn.executescript("PRAGMA incremental_vacuum;")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return removed, self.file_bytes()

    def _targets(self) -> Iterator[str]:
        return (target for (target,) in self.conn.execute("SELECT DISTINCT target FROM queue").fetchall())

    def _delete_before(self, cutoff: float) -> int:
        with self._transaction() as c:
            for target in self._targets():
                c.execute("DELETE FROM queue WHERE target = ? AND time < ?", (target, cutoff))
            return c.execute("DELETE FROM readings WHERE time < ?", (cutoff,)).rowcount

    def _delete_oldest(self, n: int) -> int:
        with self._transaction() as c:
            time, rid = c.execute("SELECT time, id FROM readings ORDER BY time, id LIMIT 1 OFFSET ?",
                                  (n - 1,)).fetchone()
            for target in self._targets():
                c.execute("DELETE FROM queue WHERE target = ? AND (time, reading) <= (?, ?)",
                          (target, time, rid))
            return c.execute("DELETE FROM readings WHERE (time, id) <= (?, ?)", (time, rid)).rowcount


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back when anything fails (a full disk may have done it)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is None:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
