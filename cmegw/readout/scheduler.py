# -*- test-case-name: tests.test_readout_scheduler -*-
"""
The readout schedule: each enabled meter of the list is read at its
interval, aligned to the clock (a 15 minute interval reads at :00, :15, :30,
:45 local time; one day at midnight), through the line's M-Bus master.

Reads of one line never overlap (they queue, in due order); lines run in
parallel.  A meter whose read is still queued or running when it falls due
again is not queued twice: that slot counts as ``overruns``.  `read_now`
queues meters at once (the pages' "read all now").  A read that fails (after
the master's own retries) is reported as failed; `MeterStatus.alarm` holds
after ``alarm_after`` failed reads in a row, until the next good one.
"""

from __future__ import annotations

import collections
import datetime
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from cmegw.config.readout import MeterConfig, ReadoutConfig, parse_interval
from cmegw.readout.reading import StoredReading

log = Logger(namespace="cmegw.readout")

#: What `Scheduler` calls to read a meter: (line, address text) -> Deferred firing with a `Reading`.
ReadMeter = Callable[[int, str], defer.Deferred]
#: What `Scheduler` calls with each outcome: (meter id, Reading or None, error text) -> Deferred of the StoredReading.
Record = Callable[[str, Any, str], defer.Deferred]


def local_offset(when: float) -> float:
    """Seconds the local time is ahead of UTC at `when` (so alignment follows the local clock)."""
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).astimezone()
    offset = moment.utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def next_due(now: float, interval: float, offset: float = 0.0) -> float:
    """The first instant after `now` that is a multiple of `interval` on the clock `offset` seconds ahead of UTC."""
    local = now + offset
    return (math.floor(local / interval) + 1) * interval - offset


@attrs.define(eq=False)
class MeterStatus:
    """What the schedule knows of one meter: the pages, the console, the API and /metrics read it."""

    id: str
    config: MeterConfig
    interval: int
    alarm_after: int = 3
    next_due: float | None = None
    last_attempt: float | None = None
    last_success: float | None = None
    #: The last good reading (also after a restart: loaded from the store).
    last_reading: StoredReading | None = None
    last_error: str = ""
    failures_in_row: int = 0
    reads: int = 0
    failures: int = 0
    overruns: int = 0
    queued: bool = False
    reading: bool = False

    @property
    def alarm(self) -> bool:
        return self.failures_in_row >= self.alarm_after

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "line": self.config.line,
            "address": self.config.address,
            "name": self.config.name,
            "enabled": self.config.enabled,
            "interval": self.interval,
            "next_due": self.next_due,
            "last_attempt": self.last_attempt,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "failures_in_row": self.failures_in_row,
            "alarm": self.alarm,
            "reads": self.reads,
            "failures": self.failures,
            "overruns": self.overruns,
            "busy": self.queued or self.reading,
            "last_reading_id": self.last_reading.id if self.last_reading else None,
        }


class Scheduler:
    """Reads the meter list on its schedule; one queue per line."""

    def __init__(self, clock: Any, read: ReadMeter, record: Record,
                 offset: Callable[[float], float] = local_offset) -> None:
        self.clock = clock
        self._read = read
        self._record = record
        self._offset = offset
        self.meters: dict[str, MeterStatus] = {}
        self._queues: dict[int, collections.deque[str]] = {}
        #: Who waits for each queued meter's read (read_now's callers; the schedule's own slot).
        self._waiters: dict[str, list[defer.Deferred]] = {}
        self._busy: set[int] = set()
        self._timer: Any = None
        self.running = False

    # -- the list -------------------------------------------------------------------

    def apply(self, meters: Mapping[str, MeterConfig], readout: ReadoutConfig) -> list[MeterStatus]:
        """
        Take a new meter list and defaults: new meters are scheduled, changed
        ones keep their history, removed ones are returned (the caller
        forgets their discovery configs).
        """
        default = readout.interval_seconds
        removed = [status for key, status in self.meters.items() if key not in meters]
        for status in removed:
            del self.meters[status.id]
        for key, config in meters.items():
            interval = parse_interval(config.interval) if config.interval else default
            status = self.meters.get(key)
            if status is None:
                status = self.meters[key] = MeterStatus(key, config, interval, readout.alarm_after)
            elif status.config != config or status.interval != interval:
                status.config, status.interval = config, interval
                status.next_due = None
            status.alarm_after = readout.alarm_after
        if self.running:
            self._plan()
        return removed

    def start(self) -> None:
        self.running = True
        self._plan()

    def stop(self) -> None:
        self.running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for queue in self._queues.values():
            while queue:
                key = queue.popleft()
                if key in self.meters:
                    self.meters[key].queued = False
                for waiter in self._waiters.pop(key, []):
                    waiter.callback(None)

    # -- reading ----------------------------------------------------------------------

    def read_now(self, keys: Iterable[str] | None = None) -> defer.Deferred:
        """
        Queue meters (all of the list when `keys` is None, disabled ones
        too) for a read now; fires with {meter id: StoredReading or None}
        when each of them has been read (None: it was not).
        """
        chosen = list(self.meters) if keys is None else list(keys)
        for key in chosen:
            if key not in self.meters:
                raise KeyError(f"there is no meter {key}; meters: {', '.join(self.meters) or 'none yet'}")
        waiters = [(key, self._enqueue(key, want_result=True)) for key in chosen]
        gathered = defer.gatherResults([d for _, d in waiters], consumeErrors=True)
        return gathered.addCallback(lambda results: dict(zip([k for k, _ in waiters], results)))

    def _enqueue(self, key: str, want_result: bool = False) -> defer.Deferred:
        status = self.meters[key]
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.setdefault(key, []).append(waiter)
        if status.queued:
            if not want_result:
                status.overruns += 1
            return waiter
        status.queued = True
        self._queues.setdefault(status.config.line, collections.deque()).append(key)
        self._run(status.config.line)
        return waiter

    def _run(self, line: int) -> None:
        """Read line `line`'s queue one meter after another (never two reads of one line at once)."""
        queue = self._queues.get(line)
        while queue and line not in self._busy:
            key = queue.popleft()
            status = self.meters.get(key)
            waiters = self._waiters.pop(key, [])
            if status is None or status.config.line != line:
                for waiter in waiters:
                    waiter.callback(None)
                continue
            self._busy.add(line)
            status.queued, status.reading = False, True
            status.last_attempt = self.clock.seconds()
            d = defer.maybeDeferred(self._read, line, status.config.address)
            d.addCallbacks(lambda reading, status=status: self._done(status, reading, ""),
                           lambda failure, status=status: self._done(status, None, failure.getErrorMessage()))
            d.addBoth(self._finished, line, status, waiters)

    def _finished(self, result: Any, line: int, status: MeterStatus, waiters: list[defer.Deferred]) -> None:
        status.reading = False
        self._busy.discard(line)
        for waiter in waiters:
            waiter.callback(result)
        self._run(line)

    def _done(self, status: MeterStatus, reading: Any, error: str) -> defer.Deferred:
        status.reads += 1
        if reading is None:
            status.failures += 1
            status.failures_in_row += 1
            status.last_error = error
            log.warn("Meter {id}: read failed: {error}", id=status.id, error=error)
        else:
            status.failures_in_row = 0
            status.last_error = ""
            status.last_success = self.clock.seconds()
        d = defer.maybeDeferred(self._record, status.id, reading, error)

        def stored(stored: StoredReading | None) -> StoredReading | None:
            if reading is not None and stored is not None:
                status.last_reading = stored
            return stored if reading is not None else None

        def lost(failure: Any) -> None:
            log.failure("Meter {id}: the reading could not be kept", failure, id=status.id)
            return None

        return d.addCallbacks(stored, lost)

    # -- the timer ---------------------------------------------------------------------

    def _plan(self) -> None:
        """Queue what is due, then sleep until the next meter falls due."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        now = self.clock.seconds()
        offset = self._offset(now)
        due = []
        for status in self.meters.values():
            if not status.config.enabled:
                status.next_due = None
                continue
            if status.next_due is None:
                status.next_due = next_due(now, status.interval, offset)
            elif status.next_due <= now:
                due.append(status)
                status.next_due = next_due(now, status.interval, offset)
        for status in sorted(due, key=lambda s: (s.config.line, s.id)):
            self._enqueue(status.id)
        upcoming = [s.next_due for s in self.meters.values() if s.next_due is not None]
        if upcoming and self.running:
            self._timer = self.clock.callLater(max(0.0, min(upcoming) - now), self._plan)

    def due_order(self) -> Sequence[MeterStatus]:
        """The meters by when they are read next (for the pages)."""
        return sorted(self.meters.values(), key=lambda s: (s.next_due is None, s.next_due or 0.0, s.id))
