# -*- test-case-name: tests.test_console_readout_commands -*-
"""
The console's readout commands: the meter list with its last readings and
alarms (``show meters``, ``show meter ID``, ``show readings ID``), the
delivery targets and the reading store (``show targets``), ``readout now``,
and ``meter add`` / ``meter remove`` (saved at once, as the Meters page
saves).  A meter's settings are changed with ``set meter.ID.FIELD VALUE``.
Loaded by `cmegw.console.commands.EXTENSIONS`; it reads only
``gateway.state.readout`` and changes the list through the config store.

Values are shown as a person reads a meter: the main registers first, in
kWh, GJ, m³, kW, the digits grouped by spaces (``48 213 kWh``: no locale
reads a space as a decimal mark).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import attrs
from twisted.internet import defer

from cmegw.config.model import Config
from cmegw.config.readout import format_interval, meters_table
from cmegw.readout import views
from cmegw.console.readings import RECORDS, plain, reading_lines, register_rows, wants_records
from cmegw.console.framework import (
    COMMANDS,
    Arguments,
    Reply,
    Result,
    Session,
    _after_words,
    columns,
    line_numbers,
    table_lines,
)
from cmegw.console.status_commands import SHOW

#: ``show readings`` without a count shows this many, at most `READINGS_LIMIT`.
READINGS_DEFAULT = 10
READINGS_LIMIT = 1000
#: How many main values the list shows per meter.
LIST_VALUES = 2
# -- what a reading says --------------------------------------------------------------------

def local_time(when: float | None) -> str:
    """A time as the gateway's clock shows it (local time, to the second); "-" for never."""
    return views.local_time(when, "-")


#: How long ago, in the two largest units (``45 s``, ``3 h 5 min``).
format_age = views.span_text


def registers(decoded: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every record of a reading as (label, value with unit), the counters first (`cmegw.readout.views`)."""
    return register_rows(views.registers(decoded))


def main_values(decoded: Mapping[str, Any], count: int = LIST_VALUES) -> str:
    """What a meter is read for, on one line of a list (``48 213 kWh, 1 234.56 m³``)."""
    return ", ".join(plain(r.text) for r in views.main_registers(decoded, count)) or "-"


def group_digits(value: float, decimals: int = 0) -> str:
    return views.group_digits(value, decimals, " ")


status_flags = views.status_flags


def value_text(row: Mapping[str, Any]) -> str:
    return plain(views.value_text(row))


# -- the readout service -----------------------------------------------------------------------

def _readout(session: Session, args: Arguments) -> Any:
    readout = session.gateway.state.readout
    if readout is None:
        raise args.error("", "cannot run", "the readouts are not running (is the gateway stopped?)")
    return readout


def _meter(session: Session, args: Arguments, word: str) -> Any:
    meters = _readout(session, args).meters
    if word not in meters:
        raise args.error(word, "is not a meter", _meter_list(meters))
    return meters[word]


def _meter_list(meters: Iterable[str]) -> str:
    names = ", ".join(meters)
    return f"meters: {names}" if names else "no meter in the list yet ('meter add' or 'mbus adopt' adds them)"


def _meter_ids(session: Session, words: list[str]) -> list[str]:
    readout = session.gateway.state.readout
    return list(readout.meters) if readout is not None else []


def _first_meter_id(session: Session, words: list[str]) -> list[str]:
    return _meter_ids(session, words) if not words else []


def _next_read(status: Any) -> str:
    if status.reading:
        return "reading now"
    if status.queued:
        return "waiting for the line"
    if not status.config.enabled:
        return "not scheduled (enabled off)"
    return local_time(status.next_due)


def _alarm(status: Any) -> str:
    if status.alarm:
        return f"ALARM: {status.failures_in_row} failed reads in a row"
    if status.failures_in_row:
        return f"no ({status.failures_in_row} failed, alarm after {status.alarm_after})"
    return "no"


def _interval(status: Any) -> str:
    text = format_interval(status.interval)
    return text + (" (the readout default)" if not status.config.interval else "")


# -- show ---------------------------------------------------------------------------------------

@SHOW.command("meters", "the meter list: last reading, main values, alarm, next read")
def show_meters(session: Session, args: Arguments) -> Result:
    """
    One line per meter of the list. ALARM: the meter failed its last reads
    (readout.alarm_after); 'show meter ID' says why.
    """
    args.expect(0, 0, "")
    readout = _readout(session, args)
    if not readout.meters:
        return "No meter in the list. 'mbus scan secondary' then 'mbus adopt LINE' adds what the bus has, "\
               "'meter add' one meter."
    rows = []
    for key, status in readout.meters.items():
        last = status.last_reading
        rows.append((key, str(status.config.line), status.config.address, local_time(last.time if last else None),
                     "ALARM" if status.alarm else "-", _next_read(status),
                     main_values(last.decoded) if last is not None else "-"))
    alarms = sum(1 for s in readout.meters.values() if s.alarm)
    head = f"Meters ({len(rows)}" + (f", {alarms} in alarm)" if alarms else ")")
    return "\n".join([head, *columns(("ID", "Line", "Address", "Last reading", "Alarm", "Next read", "Values"),
                                     rows)])


@SHOW.command("meter", "one meter: its last reading as the meter shows it, alarm, errors, counts",
              f"ID [{RECORDS}]", complete=_first_meter_id)
def show_meter(session: Session, args: Arguments) -> Result:
    """
    The meter's settings and state, then every value of its last good
    reading: the counters (energy, volume) first, in kWh, GJ and m³;
    'records' at the end adds every record as decoded. Change a setting
    with 'set meter.ID.FIELD VALUE'.
    """
    words, records = wants_records(args)
    if len(words) != 1:
        args.expect(1, 1, f"ID [{RECORDS}]")
    status = _meter(session, args, words[0])
    config = status.config
    last = status.last_reading
    decoded = last.decoded if last is not None else {}
    info = decoded.get("meter") or {}
    identity = " ".join(filter(None, (views.manufacturer_text(info.get("manufacturer")),
                                      str(info.get("identification") or ""))))
    if info.get("version") is not None:
        identity += f", version {views.version_text(info['version'])}"
    if info.get("medium_name"):
        identity += f", {info['medium_name']}"
    flags = status_flags(decoded.get("status"))
    rows = [
        ("Name", config.name or "-"),
        ("Line", str(config.line)),
        ("Address", config.address),
        ("Meter", identity.strip(", ") or "not read yet"),
        ("Read every", _interval(status)),
        ("Schedule", "on" if config.enabled else "off (read only by 'readout now')"),
        ("Next read", _next_read(status)),
        ("Last good reading", local_time(last.time) + f" (reading {last.id})" if last is not None else "none yet"),
        ("Last attempt", local_time(status.last_attempt)),
        ("Alarm", _alarm(status)),
        ("Last error", status.last_error or "-"),
        ("Meter's status", ", ".join(flags) if flags else ("ok" if last is not None else "-")),
        ("Reads", f"{status.reads} ({status.failures} failed, {status.overruns} missed: still busy when due)"),
    ]
    lines = [f"Meter {status.id}", *table_lines(rows)]
    if last is not None:
        now = session.gateway.state.clock.seconds()
        lines += ["", "Last reading", *reading_lines(decoded, last.time, now, records, last.id, status=False)]
    return "\n".join(lines)


def _readings_page(key: str, readings: Sequence[Any]) -> str:
    if not readings:
        return f"No reading of {key} kept yet."
    rows = [(local_time(r.time), "ok" if r.ok else "FAILED",
             main_values(r.decoded, count=3) if r.ok else (r.error or "no reading")) for r in readings]
    return "\n".join([f"Readings of {key} (oldest first)", *columns(("Time", "Result", "Values"), rows)])


@SHOW.command("readings", "a meter's last readings: time and main values", "ID [COUNT]",
              complete=_first_meter_id)
def show_readings(session: Session, args: Arguments) -> Result:
    """
    The last COUNT readings of the meter kept in the reading store (10
    unless told), failed ones too. The web API exports them as CSV or JSON.
    """
    words = args.expect(1, 2, "ID [COUNT]")
    status = _meter(session, args, words[0])
    count = READINGS_DEFAULT
    if len(words) > 1:
        if not words[1].isdigit() or not 1 <= int(words[1]) <= READINGS_LIMIT:
            raise args.error(words[1], "is not a count", f"use a whole number from 1 to {READINGS_LIMIT}")
        count = int(words[1])
    d = _readout(session, args).readings(status.id, limit=count)
    return d.addCallback(lambda readings: Reply(_readings_page(status.id, readings)))


@SHOW.command("targets", "where readings are delivered: state, errors, backlog; the reading store",
              aliases=("delivery",))
def show_targets(session: Session, args: Arguments) -> Result:
    """
    Each target (mqtt, push.N) keeps its own queue: a reading leaves it only
    when the target acknowledged it. Backlog: readings waiting, and how long
    the oldest has waited.
    """
    args.expect(0, 0, "")
    readout = _readout(session, args)
    now = session.gateway.state.clock.seconds()
    statuses = readout.target_statuses()
    lines = ["Delivery targets"]
    if statuses:
        rows = []
        for name, target in statuses.items():
            count, oldest = readout.backlogs.get(name, (0, None))
            age = format_age(now - oldest) if count and oldest is not None else "-"
            rows.append((name, target.state, str(target.delivered), str(count), age,
                         local_time(target.last_delivery), target.error or "-"))
        lines += columns(("Target", "State", "Delivered", "Backlog", "Oldest waiting", "Last delivery", "Error"),
                         rows)
    else:
        lines.append("  none: readings are kept in the store only (set mqtt.url, or add [push.N] targets)")
    summary = readout.store_summary()
    rows = [("File", str(summary.get("path", "-")))]
    if summary.get("bytes") is not None:
        rows.append(("Size", f"{group_digits(summary['bytes'], 0)} bytes"))
    if summary.get("readings") is not None:
        rows.append(("Readings kept", group_digits(summary["readings"], 0)))
    rows.append(("Problem", summary.get("problem") or "none"))
    return "\n".join([*lines, "", "Reading store", *table_lines(rows)])


# -- readout now --------------------------------------------------------------------------------

def readout_status(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    readout = _readout(session, args)
    meters = readout.meters.values()
    enabled = [s for s in meters if s.config.enabled]
    alarms = [s.id for s in meters if s.alarm]
    upcoming = [s.next_due for s in enabled if s.next_due is not None]
    lines = [f"Readouts: {len(readout.meters)} meters, {len(enabled)} read on schedule"
             + (f", in alarm: {', '.join(alarms)}" if alarms else ", none in alarm")]
    if upcoming:
        lines.append(f"  next read {local_time(min(upcoming))}")
    for name, target in readout.target_statuses().items():
        count, _ = readout.backlogs.get(name, (0, None))
        lines.append(f"  {name}: {target.state}, {count} waiting" + (f": {target.error}" if target.error else ""))
    lines.append("  'show meters' lists the meters, 'show targets' the delivery, 'readout now' reads.")
    return "\n".join(lines)


READOUT = COMMANDS.group("readout", "the scheduled readouts of the meter list: read now", "[now]",
                         run=readout_status,
                         details="The meter list is read on its schedule (readout.interval, or a meter's own\n"
                                 "meter.ID.interval), aligned to the clock; every reading is kept in the store\n"
                                 "and delivered to the targets ('show targets').")


def _result_line(readout: Any, key: str, stored: Any) -> str:
    if stored is not None:
        return f"  {key}: {local_time(stored.time)}  {main_values(stored.decoded, count=3)}"
    status = readout.meters.get(key)
    if status is not None and status.last_error:
        return f"  {key}: FAILED: {status.last_error}"
    return f"  {key}: not read (the readouts stopped)"


@READOUT.command("now", "read meters now, off schedule (all, or those named)", "[ID ...]",
                 complete=_meter_ids)
def readout_now(session: Session, args: Arguments) -> Result:
    """
    Queues the meters on their lines' M-Bus masters at once (meters with the
    schedule off too); reads of one line follow each other, lines run side by
    side. Each result is printed when it arrives; the readings are kept and
    delivered like scheduled ones. Ctrl-C stops waiting (the queued reads
    still run).
    """
    readout = _readout(session, args)
    keys = list(dict.fromkeys(args.words)) or list(readout.meters)
    unknown = [k for k in keys if k not in readout.meters]
    if unknown:
        raise args.error(" ".join(unknown), "is not a meter" if len(unknown) == 1 else "are not meters",
                         _meter_list(readout.meters))
    if not keys:
        raise args.error("", "has nothing to read", _meter_list(()))
    session.emit(f"Reading {len(keys)} meter(s); Ctrl-C stops waiting.")
    results: dict[str, Any] = {}

    def arrived(found: Mapping[str, Any], key: str) -> None:
        results[key] = found.get(key)
        session.emit(_result_line(readout, key, results[key]))

    waits = []
    for key in keys:
        d = defer.maybeDeferred(session.gateway.read_meters_now, [key])
        waits.append(d.addCallback(arrived, key))

    def done(_: Any) -> Reply:
        good = sum(1 for r in results.values() if r is not None)
        failed = len(keys) - good
        text = f"Read {len(keys)} meter(s): {good} good" + (f", {failed} failed" if failed else "") + "."
        return Reply(text, error=bool(failed))

    def failed(failure: Any) -> Reply:
        failure = failure.value.subFailure if isinstance(failure.value, defer.FirstError) else failure
        failure.trap(RuntimeError, KeyError)
        return Reply(f"readout now: {failure.value.args[0] if failure.value.args else failure.value}", error=True)

    return defer.gatherResults(waits, consumeErrors=True).addCallbacks(done, failed)


# -- meter add / remove --------------------------------------------------------------------------

METER = COMMANDS.group("meter", "add or remove a meter of the list (saved at once)", "[add|remove]",
                       run=show_meters,
                       details="'meter' alone lists the meters (as 'show meters').\n"
                               "To change a meter: set meter.ID.FIELD VALUE, FIELD one of line, address, name,\n"
                               "interval (30s .. 1d; \"\" = readout.interval) or enabled (on/off); then 'save'.\n"
                               "'show settings meter.ID' shows them. 'meter add' and 'meter remove' save the\n"
                               "configuration at once, with any other change not saved yet.")


def _change(session: Session, new: Config) -> None:
    """Make `new` the configuration and save it at once (as the Meters page does)."""
    session.gateway.store.change(new)


@METER.command("add", "add a meter to the list (saved at once)", "ID LINE ADDRESS [NAME...]",
               complete=lambda session, words: line_numbers(session, []) if len(words) == 1 else [])
def meter_add(session: Session, args: Arguments) -> Result:
    """
    ID names the meter in MQTT topics, URLs and files: lower-case letters,
    digits, - and _ (heat-1, flat3_water). ADDRESS is the secondary address
    (12345678-KAM-19-04, preferred: it stays right when someone changes the
    primary one) or a primary address 0..250. The meter is read at
    readout.interval; 'set meter.ID.interval 15m' reads it more often.
    """
    words = args.expect(3, max(3, len(args.words)), "ID LINE ADDRESS [NAME...]")
    key, line, address = words[:3]
    name = _after_words(args.text, 3).strip()
    if len(name) > 1 and name[0] == name[-1] and name[0] in "\"'":
        name = name[1:-1]
    config = session.gateway.store.config
    if key in config.meters:
        raise args.error(key, "is in the list already",
                         f"use another ID, or change it with set meter.{key}.FIELD VALUE")
    table = meters_table({key: {"line": int(line) if line.isdigit() else line, "address": address,
                                "name": name}})
    new = attrs.evolve(config, meters={**config.meters, **table})
    _change(session, new)
    meter = new.meters[key]
    every = format_interval(new.readout.interval_seconds) + " (readout.interval)"
    return (f"Meter {key} added: line {meter.line}, address {meter.address}"
            + (f", {meter.name!r}" if meter.name else "") + f", read every {every}; saved.\n"
            f"'readout now {key}' reads it now.")


@METER.command("remove", "take a meter out of the list (saved at once)", "ID", complete=_first_meter_id)
def meter_remove(session: Session, args: Arguments) -> Result:
    """It is no longer read; its readings already kept stay in the reading store."""
    key = args.expect(1, 1, "ID")[0]
    config = session.gateway.store.config
    if key not in config.meters:
        raise args.error(key, "is not a meter", _meter_list(config.meters))
    _change(session, attrs.evolve(config, meters={k: m for k, m in config.meters.items() if k != key}))
    return f"Meter {key} removed from the list; saved."
