# -*- test-case-name: tests.test_readout_views -*-
"""
A reading as a person reads a meter, for every face alike (web pages, JSON
API, console): who the meter is (``Kamstrup (KAM)``, version ``25 (0x19)``),
its own clock, the registers in display units (kWh, GJ, m³, kW, durations in
days) with digits grouped, the counters first, the main values of a meter,
its status byte in words, and every record as decoded (without the columns
that say nothing).  Pure functions of a reading's decoded records (the
``decoded`` of `cmegw.readout.reading.StoredReading`, or
`cmegw.mbus.results.Reading.as_dict()`).

The quantities' names for people come from the one table of
`cmegw.readout.payload` (``QUANTITIES``), which also names the JSON keys.
Numbers, durations and times are printed by `cmegw.readout.formats` (named
here too), which needs none of the tables: the faces import this module
where they show a reading, on first use.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any, Mapping

import attrs

from cmegw.readout.formats import (  # noqa: F401 (the faces' names for them)
    DURATION_UNITS,
    GROUP,
    age_text,
    duration,
    group_digits,
    in_unit,
    is_number,
    local_time,
    span_text,
    unit_text,
    version_text,
)
from cmegw.readout.manufacturers import manufacturer_name
from cmegw.readout.payload import (  # noqa: F401 (the faces' names for them)
    APPLICATION_ERRORS,
    QUANTITIES,
    STATUS_BITS,
    status_flags,
)

INSTANTANEOUS = "Instantaneous value"
#: Display units: the decoder's unit -> (shown unit, power of ten it is divided by).
DISPLAY_UNITS = {"Wh": ("kWh", 3), "J": ("GJ", 9), "W": ("kW", 3), "J/h": ("GJ/h", 9),
                 "Units for H.C.A.": ("units", 0)}
#: The counters a meter is read for: shown before every other register.
COUNTERS = ("Energy", "Volume", "Mass", "H.C.A.")
#: How many main values the meter list shows per meter.
LIST_VALUES = 3
DATETIME_POINT = "Time point (date & time)"
DATE_POINT = "Time point (date)"
#: A meter's clock this close to the gateway's (seconds) is "in step".
CLOCK_SLACK = 60


# -- values ---------------------------------------------------------------------------------------


@attrs.frozen
class Register:
    """One record of a reading as a person reads it: ``Energy`` ``48 213 kWh``."""

    #: Names the register across readings (the chart of its history): quantity, function, tariff, subunit, storage.
    key: str
    label: str
    #: The value in the shown unit (a number), or the record's value as it came (text, dates).
    value: Any
    unit: str
    text: str
    #: A current register of a quantity (not a stored value, a maximum, a duration, a number).
    main: bool
    counter: bool
    storage: int = 0


def _scaled(row: Mapping[str, Any]) -> tuple[Any, str, int]:
    """(value in the shown unit, shown unit, decimals) of a record."""
    value, unit, scale = row.get("value"), row.get("unit") or "", row.get("scale") or 0
    if not is_number(value) or not unit:
        return value, unit, 0
    if unit == "s":
        return duration(value)
    shown, power = DISPLAY_UNITS.get(unit, (unit_text(unit), 0))
    return value / 10 ** power, shown, max(0, power - scale)


def value_text(row: Mapping[str, Any]) -> str:
    """One record's value with its unit, in display units (``48 213 kWh``, ``1 234.56 m³``, ``759 days``)."""
    value, unit, decimals = _scaled(row)
    if value is None:
        return "—"
    if not is_number(value) or not unit:
        return str(value).replace("T", " ") if _is_time_point(row) else str(value)  # numbers, versions, flags
    return f"{group_digits(value, decimals)} {unit}"


def _is_time_point(row: Mapping[str, Any]) -> bool:
    return row.get("quantity") in (DATETIME_POINT, DATE_POINT) and isinstance(row.get("value"), str)


def quantity_label(row: Mapping[str, Any]) -> str:
    """What the record is, for people: the table's name of its quantity with what the meter adds to it."""
    quantity, description = str(row.get("quantity") or ""), str(row.get("description") or "")
    known = QUANTITIES.get(quantity)
    if known is None or not description.startswith(quantity):
        return description or quantity or "?"
    return known.label + description[len(quantity):]


def _label(row: Mapping[str, Any]) -> str:
    notes = []
    if row.get("function") and row["function"] != INSTANTANEOUS:
        notes.append(str(row["function"]).replace(" value", "").lower())
    if row.get("tariff"):
        notes.append(f"tariff {row['tariff']}")
    if row.get("subunit"):
        notes.append(f"subunit {row['subunit']}")
    if row.get("storage"):
        notes.append(f"stored {row['storage']}" + (f", {row['timestamp']}" if row.get("timestamp") else ""))
    return quantity_label(row) + (f" ({'; '.join(notes)})" if notes else "")


def _key(row: Mapping[str, Any]) -> str:
    quantity = str(row.get("quantity") or row.get("description") or "value")
    parts = [re.sub(r"[^a-z0-9]+", "_", quantity.lower()).strip("_")]
    if row.get("function") and row["function"] != INSTANTANEOUS:
        parts.append(str(row["function"]).split()[0].lower())
    for name in ("tariff", "subunit", "storage"):
        if row.get(name):
            parts.append(f"{name[0]}{row[name]}")
    return "-".join(parts)


def _is_main(row: Mapping[str, Any]) -> bool:
    return (is_number(row.get("value")) and bool(row.get("unit")) and row.get("unit") != "s"
            and not row.get("storage") and row.get("function") in (INSTANTANEOUS, None))


def register(row: Mapping[str, Any]) -> Register:
    value, unit, _ = _scaled(row)
    main = _is_main(row)
    return Register(_key(row), _label(row), value, unit, value_text(row), main,
                    main and row.get("quantity") in COUNTERS, int(row.get("storage") or 0))


def registers(decoded: Mapping[str, Any]) -> list[Register]:
    """Every record of a reading: the counters first, then the other current registers, then the rest
    (stored values, maxima, times, numbers), each group in the meter's order."""
    found = [register(row) for row in decoded.get("records") or ()]
    return sorted(found, key=lambda r: 0 if r.counter else 1 if r.main else 2)


def main_registers(decoded: Mapping[str, Any], count: int = LIST_VALUES) -> list[Register]:
    """
    What a meter is read for, on one line of a list: its current totals (tariff and subunit 0: a
    tariff's figure without its label would read as another total), else its first current registers.
    """
    rows = [row for row in decoded.get("records") or () if _is_main(row)]
    totals = [row for row in rows if row.get("quantity") in COUNTERS and not row.get("tariff")
              and not row.get("subunit")]
    return [register(row) for row in (totals or rows)[:count]]


# -- the meter ------------------------------------------------------------------------------------


def manufacturer_text(code: str | None) -> str:
    """``Kamstrup (KAM)``; the code alone where its name is not known; "" for none."""
    if not code:
        return ""
    name = manufacturer_name(code)
    return f"{name} ({code})" if name and name != code else code


def _clock_row(decoded: Mapping[str, Any]) -> Mapping[str, Any] | None:
    current = [row for row in decoded.get("records") or () if _is_time_point(row) and not row.get("storage")
               and row.get("function") in (INSTANTANEOUS, None)]
    return next((row for row in current if row["quantity"] == DATETIME_POINT), current[0] if current else None)


def meter_clock(decoded: Mapping[str, Any]) -> str:
    """The meter's own date and time as it sent them (``2024-03-12 14:23:00``), "" where it sent none."""
    row = _clock_row(decoded)
    return str(row["value"]).replace("T", " ") if row is not None else ""


def clock_drift(decoded: Mapping[str, Any], read_time: float | None) -> str:
    """How the meter's clock stands to the gateway's local time at `read_time`: ``5 min behind``, "" unknown."""
    row = _clock_row(decoded)
    if row is None or read_time is None or row["quantity"] != DATETIME_POINT:
        return ""
    try:
        meter = datetime.datetime.fromisoformat(str(row["value"]))
    except ValueError:
        return ""
    gateway = datetime.datetime(*time.localtime(read_time)[:6])
    seconds = (meter - gateway).total_seconds()
    if abs(seconds) < CLOCK_SLACK:
        return "in step with the gateway"
    value, unit, decimals = duration(abs(seconds))
    return f"{group_digits(value, decimals)} {unit} {'ahead of' if seconds > 0 else 'behind'} the gateway"


def identity_rows(decoded: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Who the meter is, as (label, text): only what the reading says."""
    info = decoded.get("meter") or {}
    rows = [("Manufacturer", manufacturer_text(info.get("manufacturer"))),
            ("Identification", str(info.get("identification") or "")),
            ("Medium", str(info.get("medium_name") or "")),
            ("Version", version_text(info.get("version"))),
            ("Secondary address", str(info.get("secondary") or "")),
            ("Primary address", "" if info.get("primary") is None else str(info["primary"]))]
    return [(label, text) for label, text in rows if text]


# -- every record ---------------------------------------------------------------------------------


@attrs.frozen
class RecordTable:
    """Every record as decoded: the description first, the columns that are the same for all left out."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _decoded_value(row: Mapping[str, Any]) -> str:
    value, unit = row.get("value"), str(row.get("unit") or "")
    if value is None:
        return "—"
    if is_number(value) and unit:
        return group_digits(value, max(0, -int(row.get("scale") or 0)) if isinstance(value, float) else 0)
    return str(value).replace("T", " ") if _is_time_point(row) else str(value)


#: (column, what of a row it shows, shown only where some row is not this).
_COLUMNS = (
    ("Value", _decoded_value, None),
    ("Unit", lambda row: unit_text(str(row.get("unit") or "")), ""),
    ("Function", lambda row: str(row.get("function") or INSTANTANEOUS).replace(" value", "").lower(),
     "instantaneous"),
    ("Storage", lambda row: str(row.get("storage") or 0), "0"),
    ("Tariff", lambda row: str(row.get("tariff") or 0), "0"),
    ("Subunit", lambda row: str(row.get("subunit") or 0), "0"),
    ("Time", lambda row: str(row.get("timestamp") or "").replace("T", " "), ""),
)


def record_table(decoded: Mapping[str, Any]) -> RecordTable:
    """The records in the meter's order, values as the decoder scaled them (the exponent applied)."""
    found = list(decoded.get("records") or ())
    cells = [[show(row) for _, show, _ in _COLUMNS] for row in found]
    keep = [i for i, (_, _, same) in enumerate(_COLUMNS) if same is None or any(c[i] != same for c in cells)]
    header = ("#", "Description") + tuple(_COLUMNS[i][0] for i in keep)
    rows = tuple((str(n), str(row.get("description") or row.get("quantity") or "?"), *[c[i] for i in keep])
                 for n, (row, c) in enumerate(zip(found, cells), 1))
    return RecordTable(header, rows)


# -- a whole reading ------------------------------------------------------------------------------


@attrs.frozen
class ReadingView:
    """A reading as every face shows it, top to bottom."""

    identity: tuple[tuple[str, str], ...]
    #: The meter's own clock ("" where it sent none) and how it stands to the gateway's ("" unknown).
    meter_clock: str
    drift: str
    #: The current registers (the counters first), then the rest.
    main: tuple[Register, ...]
    others: tuple[Register, ...]
    status: tuple[str, ...]
    records: RecordTable


def reading_view(decoded: Mapping[str, Any], read_time: float | None = None) -> ReadingView:
    """What a reading says, in the order a person reads it; `read_time` (POSIX) places the meter's clock."""
    clock = _clock_row(decoded)
    found = registers(decoded)
    shown_clock = register(clock) if clock is not None else None
    return ReadingView(
        identity=tuple(identity_rows(decoded)),
        meter_clock=meter_clock(decoded),
        drift=clock_drift(decoded, read_time),
        main=tuple(r for r in found if r.main),
        others=tuple(r for r in found if not r.main and r != shown_clock),
        status=tuple(status_flags(decoded.get("status"))),
        records=record_table(decoded),
    )

