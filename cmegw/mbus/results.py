# -*- test-case-name: tests.test_mbus_master -*-
"""
What the M-Bus master reports: a running or finished `Scan` and the
`MeterInfo` of what it found, the `Reading` of a meter with its records as
plain rows (`record_rows`), and the master's counters (`MasterStatistics`).
The web pages, the console and the API read these; `cmegw.mbus.master`
makes them.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Sequence

import attrs
from twisted.internet import defer

from cmegw.mbus import records
from cmegw.mbus.address import SecondaryAddress
from cmegw.stats import Counters

SCAN_RUNNING = "running"
SCAN_DONE = "done"
SCAN_CANCELLED = "cancelled"
SCAN_FAILED = "failed"


@attrs.frozen
class MeterInfo:
    """A meter found by a scan; what is unknown is None."""

    primary: int | None = None
    secondary: SecondaryAddress | None = None
    #: The identification number where the meter sent no long header (a secondary scan found it).
    ident: str | None = None

    @property
    def identification(self) -> str:
        if self.secondary is not None:
            return self.secondary.ident
        return self.ident or ""

    @property
    def manufacturer(self) -> str:
        return self.secondary.manufacturer if self.secondary is not None else ""

    @property
    def version(self) -> int | None:
        return self.secondary.version if self.secondary is not None else None

    @property
    def medium(self) -> int | None:
        return self.secondary.medium if self.secondary is not None else None

    @property
    def medium_name(self) -> str:
        return records.medium_name(self.medium) if self.medium is not None else ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "primary": self.primary,
            "secondary": str(self.secondary) if self.secondary is not None else None,
            "identification": self.identification,
            "manufacturer": self.manufacturer,
            "version": self.version,
            "medium": self.medium,
            "medium_name": self.medium_name,
        }


@attrs.define
class MasterStatistics(Counters):
    """Counters of one line's master (read by the pages and /metrics)."""

    scans: int = 0
    scans_cancelled: int = 0
    scans_failed: int = 0
    reads: int = 0
    read_failures: int = 0
    telegrams: int = 0


@attrs.define(eq=False)
class Scan:
    """
    One scan of a line, as it runs: progress, what it found, what went wrong.

    `deferred` fires with the scan itself when it ends (done, cancelled or
    failed); it never fails.
    """

    kind: str
    line: int
    started_at: float
    total: int = 0
    done: int = 0
    covered: float = 0.0
    current: str = ""
    state: str = SCAN_RUNNING
    found: list[MeterInfo] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)
    finished_at: float | None = None
    #: The line's baud rate while the scan ran (the meters it found answer at that rate).
    baud: int | None = None
    #: Tries again of a probe after a garbled answer and after silence.
    retries: int = 1
    silent_retries: int = 1
    #: The shortest its transactions could have taken on the wire (EN 13757-2), in seconds.
    floor: float = 0.0
    deferred: defer.Deferred = attrs.field(factory=defer.Deferred)
    _run: defer.Deferred | None = None
    _observers: list[Callable[["Scan"], None]] = attrs.field(factory=list)

    @property
    def running(self) -> bool:
        return self.state == SCAN_RUNNING

    @property
    def elapsed(self) -> float | None:
        """Seconds from start to end, or None while it runs."""
        return None if self.finished_at is None else self.finished_at - self.started_at

    def duration_text(self, now: float) -> str:
        """How long it took (or runs) against the floor of its transactions: ``108.4 s (floor 104.1 s, 1.04x)``."""
        took = (self.finished_at if self.finished_at is not None else now) - self.started_at
        if self.floor <= 0:
            return f"{took:.1f} s"
        return f"{took:.1f} s (floor {self.floor:.1f} s, {took / self.floor:.2f}x)"

    @property
    def progress(self) -> float:
        """From 0 to 1: addresses tried (primary), share of the identification numbers covered (secondary)."""
        if self.state == SCAN_DONE:
            return 1.0
        if self.kind == "primary":
            return self.done / self.total if self.total else 1.0
        return min(self.covered, 1.0)

    def observe(self, observer: Callable[["Scan"], None]) -> None:
        """Call `observer(scan)` after every probe and when the scan ends."""
        self._observers.append(observer)

    def cancel(self) -> None:
        """Stop after the transaction on the wire (its Deferred is cancelled)."""
        if self.running and self._run is not None:
            self._run.cancel()

    def _changed(self) -> None:
        for observer in list(self._observers):
            observer(self)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "line": self.line,
            "state": self.state,
            "progress": round(self.progress, 4),
            "probes": self.done,
            "total": self.total or None,
            "current": self.current,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "baud": self.baud,
            "elapsed": self.elapsed,
            "floor": round(self.floor, 3),
            "silent_retries": self.silent_retries,
            "found": [meter.as_dict() for meter in self.found],
            "errors": list(self.errors),
        }


@attrs.frozen
class Reading:
    """A meter's decoded answer: every telegram of one readout."""

    address: str
    telegrams: tuple[records.Telegram, ...]
    frames: tuple[bytes, ...]
    primary: int | None = None
    read_at: float = 0.0

    @property
    def secondary(self) -> SecondaryAddress | None:
        for telegram in self.telegrams:
            if telegram.address is not None:
                return telegram.address
        return None

    @property
    def records(self) -> tuple[records.Record, ...]:
        return tuple(record for telegram in self.telegrams for record in telegram.records)

    @property
    def meter(self) -> MeterInfo:
        return MeterInfo(self.primary, self.secondary)

    def rows(self) -> list[dict[str, Any]]:
        """The records as plain rows (for tables, CSV and JSON); see `record_rows`."""
        return record_rows(self.records)

    def as_dict(self) -> dict[str, Any]:
        first = self.telegrams[0].header if self.telegrams else None
        return {
            "address": self.address,
            "meter": self.meter.as_dict(),
            "access_number": first.access_number if first else None,
            "status": first.status if first else None,
            "telegrams": len(self.telegrams),
            "frames": [frame.hex() for frame in self.frames],
            "read_at": self.read_at,
            "records": self.rows(),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def record_rows(found: Sequence[records.Record]) -> list[dict[str, Any]]:
    """
    One plain row per record: value, unit, scale (decimal exponent),
    description, storage, tariff, subunit, function and timestamp (the time
    point of the same storage number, where the meter sends one).
    """
    times: dict[int, Any] = {}
    for record in found:
        if isinstance(record.value, (datetime.date, datetime.time)) and record.storage not in times:
            times[record.storage] = record.value
    rows = []
    for record in found:
        description = record.quantity
        if record.vife_meanings:
            description += " (" + ", ".join(record.vife_meanings) + ")"
        if record.plain_text_unit:
            description += f" [{record.plain_text_unit}]"
        is_time = isinstance(record.value, (datetime.date, datetime.time))
        value = record.value
        if isinstance(value, float) and record.exponent < 0:
            value = round(value, -record.exponent)  # 27.31, not 27.310000000000002
        rows.append({
            "value": _plain(value),
            "unit": record.plain_text_unit or record.unit,
            "scale": record.exponent,
            "quantity": record.quantity,
            "description": description,
            "storage": record.storage,
            "tariff": record.tariff,
            "subunit": record.subunit,
            "function": record.function_name,
            "timestamp": None if is_time else _plain(times.get(record.storage)),
        })
    return rows
