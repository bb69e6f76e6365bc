# -*- test-case-name: tests.test_readout_views -*-
"""
A reading as a person reads a meter, for every face alike (web pages, JSON
API, console): the registers in display units (kWh, GJ, m³, kW, hours) with
digits grouped, the counters first, the main values of a meter, and its
status byte in words.  Pure functions of a reading's decoded records.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import attrs

INSTANTANEOUS = "Instantaneous value"
#: Display units: the decoder's unit -> (shown unit, power of ten it is divided by).
DISPLAY_UNITS = {"Wh": ("kWh", 3), "J": ("GJ", 9), "W": ("kW", 3), "J/h": ("GJ/h", 9),
                 "m^3": ("m³", 0), "m^3/h": ("m³/h", 0), "m^3/min": ("m³/min", 0), "m^3/s": ("m³/s", 0)}
#: The counters a meter is read for: shown before every other register.
COUNTERS = ("Energy", "Volume", "Mass", "H.C.A.")
#: The status byte of the telegram's header (EN 13757-3, table 5): bit -> meaning.
STATUS_BITS = {2: "power low", 3: "permanent error", 4: "temporary error",
               5: "manufacturer flag 1", 6: "manufacturer flag 2", 7: "manufacturer flag 3"}
APPLICATION_ERRORS = {1: "application busy", 2: "application error", 3: "abnormal situation"}
#: How many main values the meter list shows per meter.
LIST_VALUES = 3
#: The digit group separator: a narrow no-break space (no locale reads it as a decimal mark).
GROUP = "\u202f"


# -- values ---------------------------------------------------------------------------------------


def group_digits(value: float, decimals: int = 0, separator: str = GROUP) -> str:
    """``48213`` -> ``48 213``; ``1234.5, 2`` -> ``1 234.50`` (narrow no-break spaces unless told)."""
    return f"{value:,.{decimals}f}".replace(",", separator)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    if unit == "s" and value >= 3600:
        return value / 3600, "h", 0
    shown, power = DISPLAY_UNITS.get(unit, (unit, 0))
    return value / 10 ** power, shown, max(0, power - scale)


def value_text(row: Mapping[str, Any]) -> str:
    """One record's value with its unit, in display units (``48 213 kWh``, ``1 234.56 m³``, ``18 210 h``)."""
    value, unit, decimals = _scaled(row)
    if value is None:
        return "—"
    if not is_number(value) or not unit:
        return str(value)  # fabrication numbers, versions, flags, dates: not quantities
    return f"{group_digits(value, decimals)} {unit}"


def _label(row: Mapping[str, Any]) -> str:
    label = row.get("description") or row.get("quantity") or "?"
    notes = []
    if row.get("function") and row["function"] != INSTANTANEOUS:
        notes.append(str(row["function"]).replace(" value", "").lower())
    if row.get("tariff"):
        notes.append(f"tariff {row['tariff']}")
    if row.get("subunit"):
        notes.append(f"subunit {row['subunit']}")
    if row.get("storage"):
        notes.append(f"stored {row['storage']}" + (f", {row['timestamp']}" if row.get("timestamp") else ""))
    return label + (f" ({'; '.join(notes)})" if notes else "")


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


def status_flags(status: int | None) -> list[str]:
    """The meter's own status byte in words (empty: all well)."""
    if not status:
        return []
    flags = [APPLICATION_ERRORS[status & 3]] if status & 3 else []
    return flags + [text for bit, text in STATUS_BITS.items() if status & (1 << bit)]
