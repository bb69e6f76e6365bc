# -*- test-case-name: tests.test_readout_store -*-
"""
The reading store: every readout of every meter in one SQLite file, with one
delivery queue per target.

The file is in WAL mode with ``synchronous=FULL``: a commit is on the disk
(the WAL fsynced) when `ReadingStore.add` fires, so a kill -9 or a power cut
at any moment loses at most the reading being written, never the file
(``NORMAL`` would survive a kill -9 too, but a power cut could take the last
commits back; at a few readings a second the fsync costs nothing).  One
connection lives on one dedicated thread (a ``ThreadPool(1, 1)`` the store
starts and stops), so the reactor never waits for the disk.

A reading's telegrams and decoded form are kept as one zlib-compressed JSON
document (about a fifth of the plain JSON); meter, time, ok and error are
columns.  A full disk or a failing write never loses a reading at once: it is
held in memory (bounded) and written with the next add or `flush`, and
`problem` says so.  The SQLite side (`cmegw.readout._storedb`, and sqlite3 with
it) is imported by the first `ReadingStore.open`: a gateway without a meter or
a target never opens the store.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import attrs
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cmegw.readout.reading import StoredReading, StoreError
from cmegw.stats import Counters

if TYPE_CHECKING:
    from cmegw.readout._storedb import Outcome

__all__ = ["ReadingStore", "StoreError", "StoreStatistics", "HOLD_LIMIT", "CSV_COLUMNS"]

log = Logger(namespace="cmegw.readout.store")

#: Readings kept in memory at most while they cannot be written (the oldest go first).
HOLD_LIMIT = 1000

#: The columns of `ReadingStore.export_csv`: one row per record of a reading.
CSV_COLUMNS = (
    "id", "meter", "time_utc", "ok", "register", "quantity", "description", "value", "unit",
    "storage", "tariff", "subunit", "function", "timestamp", "error",
)


@attrs.define
class StoreStatistics(Counters):
    """What the store did since it was opened (pages, console, /metrics)."""

    #: Readings written to the file.
    written: int = 0
    #: Write attempts that failed (disk full, I/O error); the reading was held in memory.
    write_failures: int = 0
    #: Readings held in memory, waiting to be written.
    held: int = 0
    #: Held readings dropped because more than the hold limit waited.
    dropped: int = 0
    #: Bytes of the database file and its WAL on disk.
    bytes: int = 0


class ReadingStore:
    """
    The readings of all meters and the delivery queues, in one SQLite file.

    Every method returns a Deferred.  With ``threadpool=None`` the store makes
    its own ``ThreadPool(1, 1)`` at each `open`; a pool passed in must have
    one thread (and serves one open).  The store starts the pool in `open`
    and stops it in `close`.  ``inline=True`` runs every query on the
    calling thread, the Deferreds already fired: the tests' mode (with a
    `task.Clock` as ``reactor``), and for scripts (``reactor`` may then be
    None if `prune` is given ``now``).
    ``connect`` opens the connection (`sqlite3.connect`'s arguments); tests
    pass one that keeps it, to make the disk "full" with ``max_page_count``.
    """

    def __init__(
        self,
        path: Path,
        reactor: Any,
        threadpool: ThreadPool | None = None,
        *,
        inline: bool = False,
        hold_limit: int = HOLD_LIMIT,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        if inline and threadpool is not None:
            raise ValueError("an inline store uses no thread pool")
        if threadpool is not None and threadpool.max != 1:
            raise ValueError("the reading store needs a thread pool of exactly one thread")
        self.path = Path(path)
        self._reactor = reactor
        self._inline = inline
        self._given_pool = threadpool
        self._pool: ThreadPool | None = None
        self._hold_limit = hold_limit
        self._connect = connect
        #: The `cmegw.readout._storedb.Database`, made by the first `open`.
        self._db: Any = None
        self._open = False
        self.stats = StoreStatistics()
        #: What keeps readings from the disk, in words a field engineer understands; None while all is well.
        self.problem: str | None = None

    # -- life cycle

    def open(self) -> defer.Deferred:
        """Open (or create) the file; fails with `StoreError` naming the file and what to do."""
        if self._open:
            return defer.succeed(None)
        if not self._inline:
            # a stopped ThreadPool cannot start again: a store that made its own makes one per open
            self._pool = self._given_pool or ThreadPool(1, 1, name="cmegw-reading-store")
            self._pool.start()
        if self._db is None:
            from cmegw.readout._storedb import Database

            self._db = Database(self.path, self._hold_limit, self._connect)
        self._open = True
        d = self._run("open")

        def opened(size: int) -> None:
            self.stats.bytes = size

        def failed(f: Any) -> Any:
            self._open = False
            self._stop_pool()
            return f

        return d.addCallbacks(opened, failed)

    def close(self) -> defer.Deferred:
        """Wait for the queued work, write what is held if it can, close the file, stop the thread."""
        if not self._open:
            return defer.succeed(None)
        d = self._run("close")
        self._open = False

        def closed(lost: int) -> None:
            if lost:
                log.warn("{path}: {n} readings held in memory were lost at close (they could not be written)",
                         path=str(self.path), n=lost)

        def stop(result: Any) -> Any:
            self._stop_pool()
            return result

        return d.addCallback(closed).addBoth(stop)

    def _stop_pool(self) -> None:
        if self._pool is not None and self._pool.started:
            self._pool.stop()

    def _run(self, name: str, *args: Any) -> defer.Deferred:
        """The database's method `name` on the store's thread (or inline)."""
        if not self._open:
            return defer.fail(StoreError(f"the reading store {self.path} is not open"))
        f = getattr(self._db, name)
        if self._inline or self._pool is None:
            return defer.maybeDeferred(f, *args)
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    # -- writing

    def add(
        self,
        meter: str,
        time: float,
        ok: bool,
        telegrams: Sequence[str],
        decoded: Mapping[str, Any],
        error: str,
        targets: Sequence[str],
    ) -> defer.Deferred:
        """
        Keep one readout; when ``ok``, queue it for each of ``targets`` (one
        transaction).  Fires with the `StoredReading`; its id is 0 when the
        reading could not be written and is held in memory (see `problem`).
        """
        try:
            body = encode_body(telegrams, decoded)
        except (TypeError, ValueError) as e:
            return defer.fail(StoreError(f"the reading of {meter} cannot be stored: {e}"))
        reading = StoredReading(0, meter, float(time), bool(ok), tuple(telegrams), decoded, error)
        queue = tuple(dict.fromkeys(targets)) if ok else ()
        return self._run("add", reading, body, queue).addCallback(self._outcome)

    def flush(self) -> defer.Deferred:
        """Try again to write the readings held in memory; fires with how many are still held."""
        def flushed(outcome: Outcome) -> int:
            self._outcome(outcome)
            return outcome.held

        return self._run("flush").addCallback(flushed)

    def _outcome(self, outcome: Outcome) -> StoredReading | None:
        stats = self.stats
        stats.written += outcome.written
        stats.write_failures += outcome.failures
        stats.held = outcome.held
        stats.dropped = outcome.dropped
        stats.bytes = outcome.bytes
        if outcome.problem != self.problem:
            if outcome.problem:
                log.warn("{problem}", problem=outcome.problem)
            else:
                log.info("{path}: the held readings are written", path=str(self.path))
        self.problem = outcome.problem
        return outcome.reading

    # -- delivery queues

    def pending(self, target: str, limit: int, after_id: int = 0) -> defer.Deferred:
        """
        Up to ``limit`` readings queued for ``target``, oldest first (by time,
        then id); with ``after_id``, those after that reading in this order.
        """
        return self._run("pending", target, limit, after_id)

    def delivered(self, target: str, ids: Sequence[int]) -> defer.Deferred:
        """Take these readings off ``target``'s queue."""
        return self._run("delivered", target, tuple(ids))

    def backlog(self, target: str) -> defer.Deferred:
        """Fires with (readings queued for ``target``, time of the oldest of them or None)."""
        return self._run("backlog", target)

    def backlogs(self) -> defer.Deferred:
        """Fires with {target: (count, oldest time)} for every target with a queue."""
        return self._run("backlogs")

    def drop_target(self, target: str) -> defer.Deferred:
        """Forget the queue of a removed target; fires with how many readings were on it."""
        return self._run("drop_target", target)

    # -- history

    def readings(
        self,
        meter: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = 100,
        ok_only: bool = False,
    ) -> defer.Deferred:
        """
        The ``limit`` newest readings (of ``meter``, or all) with
        ``since <= time < until``, in time order (newest last).
        """
        return self._run("readings", meter, since, until, limit, ok_only)

    def last(self, meter: str) -> defer.Deferred:
        """Fires with the newest reading of ``meter`` (good or failed), or None."""
        return self.readings(meter, limit=1).addCallback(lambda found: found[-1] if found else None)

    def recent_results(self, meter: str, n: int) -> defer.Deferred:
        """Fires with the ``ok`` of the last ``n`` reads of ``meter``, newest first."""
        return self._run("recent_results", meter, n)

    def meters(self) -> defer.Deferred:
        """Fires with the names of the meters that have readings, sorted."""
        return self._run("meters")

    def export_json(self, meter: str | None = None, since: float | None = None,
                   until: float | None = None, limit: int | None = None) -> defer.Deferred:
        """
        Fires with a list of readings, oldest first: ``id``, ``meter``,
        ``time`` (Unix seconds), ``time_utc``, ``ok``, ``error``,
        ``telegrams`` (hex) and ``decoded`` (with its ``records``).  The
        whole export is built in memory: give a period (or ``limit``, the
        newest that many) for a long history.
        """
        return self.readings(meter, since, until, limit).addCallback(
            lambda found: [reading_json(r) for r in found])

    def export_csv(self, meter: str | None = None, since: float | None = None,
                   until: float | None = None, limit: int | None = None) -> defer.Deferred:
        """
        Fires with CSV text (`CSV_COLUMNS`): one row per record, oldest
        reading first; a failed read or one without records is one row with
        its error.  Time in UTC, ``2024-03-12 14:23:00``.
        """
        return self.readings(meter, since, until, limit).addCallback(readings_csv)

    # -- retention

    def prune(self, max_age_s: float | None, max_bytes: int | None,
              now: float | None = None) -> defer.Deferred:
        """
        Delete the oldest readings (and their queue rows) until none is older
        than ``max_age_s`` and the database takes at most ``max_bytes``; fires
        with how many went.

        Size is the database's pages in use, ``(page_count - freelist_count)
        * page_size``: what the file measures once the free pages are given
        back (``PRAGMA incremental_vacuum``) and the WAL is checkpointed, both
        of which a prune that deleted something does (the WAL is truncated).
        Between prunes the WAL adds about 1 MiB at most (``wal_autocheckpoint``
        and ``journal_size_limit``), more only during one large transaction.
        """
        if now is None:
            now = self._reactor.seconds()
        return self._run("prune", now, max_age_s, max_bytes).addCallback(self._pruned)

    def _pruned(self, result: tuple[int, int]) -> int:
        removed, size = result
        self.stats.bytes = size
        return removed


def encode_body(telegrams: Sequence[str], decoded: Mapping[str, Any]) -> bytes:
    """The stored form of a reading's telegrams and decoded form: zlib-compressed JSON."""
    text = json.dumps({"telegrams": list(telegrams), "decoded": decoded}, separators=(",", ":"))
    return zlib.compress(text.encode("utf-8"), 6)


def utc_text(t: float) -> str:
    """``2024-03-12 14:23:00``: ISO 8601 in UTC, as spreadsheets read it."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def iso_utc(t: float) -> str:
    """ISO 8601 in UTC with Z, as the JSON exports and the API give times."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def reading_json(r: StoredReading) -> dict[str, Any]:
    return {
        "id": r.id, "meter": r.meter, "time": r.time, "time_utc": iso_utc(r.time), "ok": r.ok,
        "error": r.error, "telegrams": list(r.telegrams), "decoded": dict(r.decoded),
    }


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet does not run as a formula (``=...`` gets a leading ')."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def readings_csv(found: Sequence[StoredReading]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in found:
        head = [r.id, _cell(r.meter), utc_text(r.time), int(r.ok)]
        rows = (r.decoded.get("records") or []) if r.ok else []
        if not rows:
            writer.writerow(head + [""] * (len(CSV_COLUMNS) - 5) + [_cell(r.error)])
        for number, row in enumerate(rows, 1):
            writer.writerow(head + [number] + [_cell(row.get(key)) for key in (
                "quantity", "description", "value", "unit", "storage", "tariff", "subunit",
                "function", "timestamp")] + [_cell(r.error)])
    return out.getvalue()
