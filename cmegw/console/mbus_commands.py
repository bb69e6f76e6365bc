# -*- test-case-name: tests.test_console_mbus_commands -*-
"""
The console's ``mbus`` commands: scan a line by primary or secondary
address, read a meter and show its records, stop a scan, show what the last
scans found, adopt what they found into the meter list.  Loaded by
`cmegw.console.commands.EXTENSIONS`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from cmegw.config.model import ConfigError
from cmegw.config.readout import check_interval
from cmegw.console.framework import COMMANDS, Arguments, Reply, Result, Session, columns, number_argument
from cmegw.mbus.master import MeterError, ScanRunning, parse_meter_address
from cmegw.console.readings import RECORDS, identity_lines, reading_lines, wants_records
from cmegw.mbus.results import SCAN_RUNNING, MeterInfo, Reading, Scan
from cmegw.readout import views
from cmegw.state import BusView

#: A scan prints a progress line each time it has covered this much more of its range.
PROGRESS_STEP = 0.1
KINDS = ("primary", "secondary")


def _masters(session: Session) -> dict[int, BusView]:
    return session.gateway.state.bus


def _master(session: Session, args: Arguments, word: str | None) -> BusView:
    masters = _masters(session)
    if not masters:
        raise args.error("", "cannot run", "no line has a master (is the gateway stopped?)")
    return masters[number_argument(args, word, masters, "line") if word is not None else min(masters)]


def _lines(session: Session, words: list[str]) -> list[str]:
    return [str(n) for n in _masters(session)]


def _kind_then_line(session: Session, words: list[str]) -> list[str]:
    return [*KINDS, *_lines(session, words)] if not words else _lines(session, words) if len(words) == 1 else []


def meter_lines(found: list[MeterInfo]) -> list[str]:
    rows = [(str(m.primary) if m.primary is not None else "-", m.identification or "-",
             views.manufacturer_text(m.manufacturer) or "-", views.version_text(m.version) or "-",
             f"{m.medium_name}" if m.medium is not None else "-") for m in found]
    return columns(("Primary", "Ident", "Manufacturer", "Version", "Medium"), rows)


def scan_report(scan: Scan) -> str:
    head = f"{scan.kind.capitalize()} scan of line {scan.line} {scan.state}: {len(scan.found)} meters"
    if scan.kind == "primary":
        head += f", {scan.done} of {scan.total} addresses"
    else:
        head += f", {scan.done} selections"
    lines = [head + f", {scan.duration_text(scan.finished_at or scan.started_at)}."]
    if scan.found:
        lines += meter_lines(scan.found)
    lines += [f"  ! {error}" for error in scan.errors]
    return "\n".join(lines)


def reading_report(reading: Reading, now: float, records: bool = False) -> str:
    """A meter read from the bus, as `show meter` and the web pages show a reading."""
    decoded = reading.as_dict()
    view = views.reading_view(decoded, reading.read_at)
    head = f"Meter at {reading.address} ({len(reading.telegrams)} telegram{'s' if len(reading.telegrams) != 1 else ''})"
    return "\n".join([head, *identity_lines(view), *reading_lines(decoded, reading.read_at, now, records)])


def mbus_status(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    out = []
    for n, master in sorted(_masters(session).items()):
        stats = master.stats
        out.append(f"Line {n}: {stats.transactions} transactions ({stats.answered} answered, {stats.silent} silent, "
                   f"{stats.garbled + stats.invalid + stats.truncated} garbled/invalid/truncated), "
                   f"{stats.queue_length} waiting")
        scan = master.scan
        if scan is None:
            out.append("  no scan yet ('mbus scan' searches the bus)")
        elif scan.state == SCAN_RUNNING:
            out.append(f"  {scan.kind} scan running: {scan.progress:.0%}, {len(scan.found)} meters so far")
        for kind in KINDS:
            found = master.results.get(kind)
            if found is not None:
                out.append(f"  last {kind} scan: {len(found)} meters")
                out += ["  " + line for line in meter_lines(found)] if found else []
    return "\n".join(out) or "No lines."


MBUS = COMMANDS.group("mbus", "the integrated M-Bus master: scan the bus, read meters", "[scan|read|stop|adopt]",
                      run=mbus_status,
                      details="Every request goes through the line's bus arbiter: one transaction at a time, "
                              "interleaved with the tunnel's clients. The web page Meters has the same.")


class _ScanWatch:
    """Prints a scan's progress and its meters as found; the Deferred fires with the report."""

    def __init__(self, session: Session, scan: Scan) -> None:
        self.session = session
        self.scan = scan
        self.shown = 0
        self.next_step = PROGRESS_STEP
        self.done: defer.Deferred = defer.Deferred(lambda _: scan.cancel())
        scan.observe(self._changed)
        scan.deferred.addCallback(self._ended)

    def _changed(self, scan: Scan) -> None:
        for meter in scan.found[self.shown:]:
            self.session.emit(f"  found: primary {meter.primary if meter.primary is not None else '-'}"
                              + (f", secondary {meter.secondary}" if meter.secondary else "")
                              + (f", ident {meter.ident}" if meter.ident else ""))
        self.shown = len(scan.found)
        if scan.running and scan.progress >= self.next_step:
            self.session.emit(f"  {scan.progress:.0%} ({scan.current})")
            while self.next_step <= scan.progress:
                self.next_step += PROGRESS_STEP

    def _ended(self, scan: Scan) -> Scan:
        if not self.done.called:
            self.done.callback(Reply(scan_report(scan)))
        return scan


@MBUS.command("scan", "search the bus for meters (Ctrl-C stops)", "[primary|secondary] [LINE]",
              complete=_kind_then_line)
def mbus_scan(session: Session, args: Arguments) -> Result:
    """
    primary: SND_NKE to every address 0..250 (an empty address costs the
    answer timeout twice: about 0.63 s at 2400 baud, 2.6 minutes for the
    whole range); each meter found is read once for its secondary address.
    secondary: the wildcard search over the identification numbers; it
    finds meters whatever their primary address.
    """
    words = args.expect(0, 2, "[primary|secondary] [LINE]")
    kind = "primary"
    if words and not words[0].isdigit():
        matches = [k for k in KINDS if k.startswith(words[0].lower())]
        if len(matches) != 1:
            raise args.error(words[0], "is not a kind of scan", "use primary or secondary")
        kind = matches[0]
        words = words[1:]
    if len(words) > 1:
        raise args.error(words[1], "is one argument too many", "use mbus scan [primary|secondary] [LINE]")
    master = _master(session, args, words[0] if words else None)
    try:
        scan = session.gateway.start_scan(master.number, kind, identify=True)
    except ScanRunning as e:
        raise args.error("", str(e).split(": ", 1)[-1], "wait for it, or 'mbus stop' it") from None
    session.emit(f"Scanning line {master.number} by {kind} address; Ctrl-C stops.")
    return _ScanWatch(session, scan).done


@MBUS.command("stop", "stop the line's running scan", "[LINE]", complete=_lines)
def mbus_stop(session: Session, args: Arguments) -> Result:
    words = args.expect(0, 1, "[LINE]")
    master = _master(session, args, words[0] if words else None)
    scan = master.scan
    if scan is None or not scan.running:
        return f"No scan runs on line {master.number}."
    scan.cancel()
    return scan_report(scan)


@MBUS.command("read", "read a meter and show its values (Ctrl-C stops)", f"ADDRESS [LINE] [{RECORDS}]",
              complete=None)
def mbus_read(session: Session, args: Arguments) -> Result:
    """
    ADDRESS is a primary address (0..250), a secondary address
    (12345678-KAM-19-04 or 16 hex digits) or an identification number alone
    (8 digits). The main values come first, in kWh, m³, days; 'records' at
    the end adds every record as decoded.
    """
    words, records = wants_records(args)
    if not 1 <= len(words) <= 2:
        args.expect(1, 2, f"ADDRESS [LINE] [{RECORDS}]")
    try:
        address = parse_meter_address(words[0])
    except ValueError as e:
        raise args.error(words[0], "is not a meter address",
                         f"use 0..250, 12345678-KAM-19-04 or 8 digits ({e})") from None
    master = _master(session, args, words[1] if len(words) > 1 else None)
    d = session.gateway.read_meter(master.number, address)

    def failed(failure: Any) -> Reply:
        failure.trap(MeterError)
        return Reply(f"mbus read: {failure.getErrorMessage()}", error=True)

    d.addCallbacks(lambda reading: Reply(reading_report(reading, session.gateway.state.clock.seconds(), records)),
                   failed)
    return d


@MBUS.command("adopt", "add the meters the last scans of a line found to the meter list (saved at once)",
              "LINE [INTERVAL]", complete=_lines)
def mbus_adopt(session: Session, args: Arguments) -> Result:
    """
    Every meter the line's last primary or secondary scan found that is not
    in the list yet is added, by its secondary address, and read on the
    schedule from then on: every INTERVAL (30s .. 1d, such as 15m), or at
    readout.interval when none is given. Prints the ids given to them;
    'set meter.ID.name ...' names them, 'meter remove ID' takes one out.
    """
    words = args.expect(1, 2, "LINE [INTERVAL]")
    master = _master(session, args, words[0])
    interval = words[1] if len(words) > 1 else ""
    if interval:
        try:
            check_interval("interval", interval)
        except ConfigError as e:
            raise args.error(interval, "is not a read interval", e.allowed) from None
    found = [*(master.results.get("secondary") or ()), *(master.results.get("primary") or ())]
    if not found:
        raise args.error("", f"line {master.number} has no scan result yet",
                         f"run 'mbus scan secondary {master.number}' first")
    d = defer.maybeDeferred(session.gateway.adopt_meters, master.number, interval=interval)

    def adopted(added: list[str]) -> Reply:
        if not added:
            return Reply(f"No meter added: the meters the scans of line {master.number} found are in the list "
                         "already.")
        every = interval or f"{session.gateway.store.config.readout.interval} (readout.interval)"
        return Reply(f"Added {len(added)} meter(s) to the list, saved: {', '.join(added)}.\n"
                     f"Read every {every}; 'show meters' lists them, 'readout now' reads them now.")

    def refused(failure: Any) -> Reply:
        failure.trap(ValueError, KeyError)
        if failure.check(ConfigError):
            return Reply(f"mbus adopt: {failure.value}", error=True)
        message = failure.value.args[0] if failure.value.args else failure.getErrorMessage()
        return Reply(f"mbus adopt: {message}", error=True)

    return d.addCallbacks(adopted, refused)
