# -*- test-case-name: tests.test_readout_payload -*-
"""
The JSON a reading is delivered as, in wmbusmeters' habit: one flat object
with the meter's identity (``_``, ``id``, ``meter``, ``name``, ``media``,
``manufacturer``...), one key per register named ``<quantity>_<unit>``
(``total_energy_consumption_kwh``, ``total_m3``, ``flow_temperature_c``,
``target_m3``, ``max_power_kw``...), the status, ``timestamp`` (UTC, ``Z``)
and the full ``records`` list beside them.  Also `csv_lines`, the raw
telegrams in the Elvaco CMe3100 habit.

The register keys come from one table (`QUANTITIES`), driven by the
record's quantity, unit, function, storage, tariff and subunit, never by
the meter type; a record's VIFE meanings (in its description) add a word
where they change what the value is.  Values are converted to one unit
per quantity, the last part of the key:

- energy in kWh (from Wh, or J / 3.6e6: a meter counting in GJ shows kWh
  too, 1 GJ = 277.78 kWh), power in kW, volume in m3, volume flow in m3/h,
  temperatures in c (°F converted), temperature differences in k;
- on time, operating time and battery times in hours (h); the short
  durations of the protocol (averaging, actuality, storage interval...)
  stay in seconds (s), as wmbusmeters' ``actuality_duration_s``;
- storage 1 (the due day's billing values) is ``target_...``, storage n >= 2
  ``storage_<n>_...``; the maximum, minimum and error-state functions are
  ``max_``, ``min_``, ``error_``; tariff t and subunit s add ``_tariff_<t>``
  and ``_subunit_<s>`` before the unit, as wmbusmeters'
  ``total_energy_consumption_tariff_1_kwh``;
- dates and times are ISO strings (``meter_datetime``, ``target_date``);
- a key that is taken (by an earlier register or by the payload's own keys)
  gets ``_2``, ``_3``... before its unit, in record order, so the keys of a
  meter stay the same from one reading to the next.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from typing import Any, Mapping, Sequence

import attrs

from cmegw.readout.manufacturers import manufacturer_name
from cmegw.readout.reading import StoredReading

#: What a register is, for Home Assistant's state classes and the pages.
TOTAL = "total"  # a counter: energy, volume, mass, hours, H.C.A. units
MEASUREMENT = "measurement"  # power, flow, temperature, pressure, voltage, current
DATE = "date"
DATETIME = "datetime"
INFO = "info"  # what the meter says about itself: numbers, versions, flags, settings
OTHER = "other"  # a quantity or unit the table does not know: shown as sent

#: The payload's own keys, which no register may take.
RESERVED_KEYS = frozenset((
    "_", "id", "meter", "name", "line", "media", "manufacturer", "manufacturer_name", "version",
    "primary", "secondary", "access_number", "status", "alarm", "timestamp", "reading_id",
    "gateway", "records",
    # dict methods: Home Assistant's template `value_json.items` would find the method
    "clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values",
))

#: Words of the media like wmbusmeters' ``media`` (EN 13757-3 table 3).
MEDIA = {
    0x00: "other", 0x01: "oil", 0x02: "electricity", 0x03: "gas", 0x04: "heat", 0x05: "steam",
    0x06: "warm water", 0x07: "water", 0x08: "heat cost allocation", 0x09: "compressed air",
    0x0A: "cooling", 0x0B: "cooling", 0x0C: "heat", 0x0D: "heat/cooling", 0x0E: "bus/system",
    0x0F: "unknown", 0x14: "calorific value", 0x15: "hot water", 0x16: "cold water",
    0x17: "dual water", 0x18: "pressure", 0x19: "a/d converter", 0x1A: "smoke detector",
    0x1B: "room sensor", 0x1C: "gas detector", 0x20: "breaker", 0x21: "valve",
    0x25: "customer unit", 0x28: "waste water", 0x29: "garbage", 0x2A: "carbon dioxide",
    0x31: "communication controller", 0x32: "repeater", 0x33: "repeater",
    0x36: "radio converter", 0x37: "radio converter",
}


def media(medium: int | None) -> str:
    """The lower-case medium words (``heat``, ``cold water``...), ``unknown`` without a medium."""
    if medium is None:
        return "unknown"
    return MEDIA.get(medium, "reserved")


#: The status byte of the telegram's header (EN 13757-3, table 5): bit -> meaning.
STATUS_BITS = {2: "power low", 3: "permanent error", 4: "temporary error",
               5: "manufacturer flag 1", 6: "manufacturer flag 2", 7: "manufacturer flag 3"}
APPLICATION_ERRORS = {1: "application busy", 2: "application error", 3: "abnormal situation"}


def status_flags(status: int | None) -> list[str]:
    """The meter's own status byte in words (empty: all well)."""
    if not status:
        return []
    flags = [APPLICATION_ERRORS[status & 3]] if status & 3 else []
    return flags + [text for bit, text in STATUS_BITS.items() if status & (1 << bit)]


def status_words(status: int | None) -> str:
    """
    The status byte of the application header in words (EN 13757-3, as
    `status_flags` says it on the pages): ``OK``, or what is set
    (``application busy``, ``power low``, ``permanent error``...) joined by
    commas.
    """
    if status is None:
        return "unknown"
    return ", ".join(status_flags(status)) or "OK"


def slug(text: str) -> str:
    """Lower-case letters, digits and single underscores (``m^3/h`` -> ``m3h``)."""
    text = text.lower().replace("^", "").replace("/", "").replace("°", "").replace("%", "")
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


@attrs.frozen
class Conversion:
    """From a record's unit to the key's: ``value * factor + offset`` in `display`."""

    suffix: str
    display: str
    factor: float = 1.0
    offset: float = 0.0


@attrs.frozen
class Quantity:
    """
    How one quantity is named: `name` alone (storage 0, instantaneous),
    `stored` after a storage or function prefix, `label` for people.
    """

    name: str
    stored: str
    label: str
    kind: str
    units: Mapping[str, Conversion]


_GALLON = 0.003785411784
_ENERGY = {"Wh": Conversion("kwh", "kWh", 1e-3), "J": Conversion("kwh", "kWh", 1 / 3.6e6)}
_POWER = {"W": Conversion("kw", "kW", 1e-3), "J/h": Conversion("kw", "kW", 1 / 3.6e6)}
_VOLUME = {
    "m^3": Conversion("m3", "m³"),
    "feet^3": Conversion("m3", "m³", 0.028316846592),
    "American gallon": Conversion("m3", "m³", _GALLON),
}
_FLOW = {
    "m^3/h": Conversion("m3h", "m³/h"),
    "m^3/min": Conversion("m3h", "m³/h", 60.0),
    "m^3/s": Conversion("m3h", "m³/h", 3600.0),
    "American gallon/min": Conversion("m3h", "m³/h", _GALLON * 60),
    "American gallon/h": Conversion("m3h", "m³/h", _GALLON),
}
_TEMPERATURE = {"°C": Conversion("c", "°C"), "°F": Conversion("c", "°C", 5 / 9, -32 * 5 / 9)}
_DIFFERENCE = {"K": Conversion("k", "K"), "°F": Conversion("k", "K", 5 / 9)}
_HOURS = {"s": Conversion("h", "h", 1 / 3600)}
_SECONDS = {"s": Conversion("s", "s")}
_NONE = {"": Conversion("", "")}


def _q(name: str, stored: str, label: str, kind: str, units: Mapping[str, Conversion]) -> Quantity:
    return Quantity(name, stored, label, kind, units)


#: The quantities of `cmegw.mbus.records` that have a name of their own.
QUANTITIES: dict[str, Quantity] = {
    "Energy": _q("total_energy_consumption", "energy", "Energy", TOTAL, _ENERGY),
    "Volume": _q("total", "", "Volume", TOTAL, _VOLUME),
    "Mass": _q("total_mass", "mass", "Mass", TOTAL, {"kg": Conversion("kg", "kg")}),
    "On time": _q("on_time", "on_time", "On time", TOTAL, _HOURS),
    "Operating time": _q("operating_time", "operating_time", "Operating time", TOTAL, _HOURS),
    "Operating time battery": _q(
        "battery_operating_time", "battery_operating_time", "Battery operating time", TOTAL, _HOURS
    ),
    "Remaining battery life": _q(
        "remaining_battery_life", "remaining_battery_life", "Remaining battery life", MEASUREMENT, _HOURS
    ),
    "Power": _q("power", "power", "Power", MEASUREMENT, _POWER),
    "Volume flow": _q("volume_flow", "volume_flow", "Volume flow", MEASUREMENT, _FLOW),
    "Mass flow": _q("mass_flow", "mass_flow", "Mass flow", MEASUREMENT, {"kg/h": Conversion("kgh", "kg/h")}),
    "Flow temperature": _q("flow_temperature", "flow_temperature", "Flow temperature", MEASUREMENT, _TEMPERATURE),
    "Return temperature": _q(
        "return_temperature", "return_temperature", "Return temperature", MEASUREMENT, _TEMPERATURE
    ),
    "External temperature": _q(
        "external_temperature", "external_temperature", "External temperature", MEASUREMENT, _TEMPERATURE
    ),
    "Temperature": _q("temperature", "temperature", "Temperature", MEASUREMENT, _TEMPERATURE),
    "Temperature difference": _q(
        "temperature_difference", "temperature_difference", "Temperature difference", MEASUREMENT, _DIFFERENCE
    ),
    "Pressure": _q("pressure", "pressure", "Pressure", MEASUREMENT, {"bar": Conversion("bar", "bar")}),
    "Voltage": _q("voltage", "voltage", "Voltage", MEASUREMENT, {"V": Conversion("v", "V")}),
    "Current": _q("current", "current", "Current", MEASUREMENT, {"A": Conversion("a", "A")}),
    "H.C.A.": _q(
        "current_consumption", "consumption", "Consumption", TOTAL,
        {"Units for H.C.A.": Conversion("hca", "")},
    ),
    "Time point (date)": _q("meter_date", "date", "Date", DATE, _NONE),
    "Time point (date & time)": _q("meter_datetime", "datetime", "Date and time", DATETIME, _NONE),
    "Fabrication No": _q("fabrication_no", "fabrication_no", "Fabrication number", INFO, _NONE),
    "Error flags": _q("error_flags", "error_flags", "Error flags", INFO, _NONE),
    "Averaging duration": _q("averaging_duration", "averaging_duration", "Averaging duration", INFO, _SECONDS),
    "Actuality duration": _q("actuality_duration", "actuality_duration", "Actuality duration", INFO, _SECONDS),
}
for _name in (
    "Firmware version", "Software version", "Hardware version", "Model / Version",
    "Parameter set identification", "(Enhanced) Identification", "Bus Address", "Customer",
    "Customer location", "Digital Input", "Digital Output", "Reset counter", "Cumulation counter",
    "Access Number (transmission count)",
):
    QUANTITIES[_name] = _q(slug(_name), slug(_name), _name[:1] + _name[1:].lower(), INFO, _NONE)
del _name

_STORAGE_PREFIX = {0: "", 1: "target"}
_FUNCTION_PREFIX = {
    "Instantaneous value": "",
    "Maximum value": "max",
    "Minimum value": "min",
    "Value during error state": "error",
}
_FUNCTION_LABEL = {"max": "maximum", "min": "minimum", "error": "in error state"}

_POSITIVE = "accumulation only if positive contributions"
_NEGATIVE = "accumulation of abs value only if negative contributions"
#: VIFE meanings that say nothing about what the value is (corrections are in the value already).
_SILENT = re.compile(r"(error/action code \d+|multiplicative correction factor .*|additive correction constant .*)\Z")
#: (quantity, VIFE meaning) -> the names and label that replace the quantity's.
_RENAMED = {
    ("Energy", _NEGATIVE): ("total_energy_production", "energy_production", "Energy production"),
    ("Volume", _NEGATIVE): ("total_backward", "backward", "Backward volume"),
}
_WORDS = {_POSITIVE: "", _NEGATIVE: "negative", "manufacturer specific": "mfct", "future value": "future"}


def modifiers(row: Mapping[str, Any]) -> list[str]:
    """The VIFE meanings of a record row, read back from its description."""
    quantity, description = str(row.get("quantity") or ""), str(row.get("description") or "")
    rest = description[len(quantity):] if description.startswith(quantity) else ""
    if rest.endswith("]") and " [" in rest:
        rest = rest[: rest.rindex(" [")]
    if not (rest.startswith(" (") and rest.endswith(")")):
        return []
    return [meaning for meaning in rest[2:-1].split(", ") if meaning]


@attrs.frozen
class Register:
    """One record of a reading as a payload key, with its value in `unit_out`."""

    key: str
    value: Any
    unit_out: str
    quantity: str
    storage: int
    function: str
    tariff: int
    subunit: int = 0
    kind: str = OTHER
    label: str = ""
    #: Decimal places worth showing (None for what is not a number).
    precision: int | None = None

    @property
    def numeric(self) -> bool:
        return self.kind in (TOTAL, MEASUREMENT) or (
            self.kind in (INFO, OTHER) and isinstance(self.value, (int, float)) and bool(self.unit_out)
        )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _convert(value: Any, scale: int, conversion: Conversion) -> tuple[Any, int]:
    """The value in the key's unit, rounded to what the meter resolves, and its decimal places."""
    resolution = 10.0 ** scale * abs(conversion.factor)
    places = min(9, max(0, math.ceil(-math.log10(resolution) - 1e-9))) if resolution > 0 else 9
    value = _finite(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value, places
    if conversion.factor == 1.0 and conversion.offset == 0.0 and isinstance(value, int):
        return value, places
    converted = value * conversion.factor + conversion.offset
    if places == 0:
        return int(round(converted)), 0
    return round(converted, places), places


def _parts(row: Mapping[str, Any]) -> tuple[list[str], list[str], str, Conversion]:
    """The key's name parts (without the unit), the label's words, the kind and the conversion."""
    quantity = str(row.get("quantity") or "")
    unit = str(row.get("unit") or "")
    storage = int(row.get("storage") or 0)
    tariff = int(row.get("tariff") or 0)
    subunit = int(row.get("subunit") or 0)
    function = _FUNCTION_PREFIX.get(str(row.get("function") or ""), "")
    entry = QUANTITIES.get(quantity)
    name = entry.name if entry else slug(quantity) or "value"
    stored = entry.stored if entry else name
    label = entry.label if entry else quantity or "Value"
    words = []
    for meaning in modifiers(row):
        if (quantity, meaning) in _RENAMED:
            name, stored, label = _RENAMED[(quantity, meaning)]
        elif not _SILENT.match(meaning):
            words.append(_WORDS.get(meaning, slug(meaning)))
    conversion = entry.units.get(unit) if entry else None
    kind = entry.kind if entry and conversion else OTHER
    if conversion is None:
        conversion = Conversion("" if unit in ("", quantity) else slug(unit), unit)
    prefix = _STORAGE_PREFIX.get(storage, f"storage_{storage}")
    parts = [prefix, function, stored] if prefix or function else [name]
    labels = [("Target" if storage == 1 else f"Storage {storage}") if prefix else "",
              _FUNCTION_LABEL.get(function, ""), label if not (prefix or function) else label.lower()]
    parts += words + ([f"tariff_{tariff}"] if tariff else []) + ([f"subunit_{subunit}"] if subunit else [])
    labels += [w.replace("_", " ") for w in words if w]
    labels += ([f"tariff {tariff}"] if tariff else []) + ([f"subunit {subunit}"] if subunit else [])
    return [p for p in parts if p], [w for w in labels if w], kind, conversion


def register_keys(reading: StoredReading) -> list[Register]:
    """The registers of a reading in record order, each with its own key."""
    taken = set(RESERVED_KEYS)
    registers = []
    for row in reading.decoded.get("records") or ():
        parts, labels, kind, conversion = _parts(row)
        value, places = _convert(row.get("value"), int(row.get("scale") or 0), conversion)
        if kind in (TOTAL, MEASUREMENT) and isinstance(value, str):
            kind = OTHER  # a date or text where a number belongs (a "date/time of" VIFE)
        suffix = [conversion.suffix] if conversion.suffix and not isinstance(value, str) else []
        if parts[0][:1].isdigit():
            parts.insert(0, "value")  # `value_json.2nd_...` is no template
        key = "_".join(parts + suffix)
        count = 1
        while key in taken:
            count += 1
            key = "_".join(parts + [str(count)] + suffix)
        taken.add(key)
        label = " ".join(labels) + (f" {count}" if count > 1 else "")
        registers.append(Register(
            key=key,
            value=value,
            unit_out="" if isinstance(value, str) else conversion.display,
            quantity=str(row.get("quantity") or ""),
            storage=int(row.get("storage") or 0),
            function=str(row.get("function") or ""),
            tariff=int(row.get("tariff") or 0),
            subunit=int(row.get("subunit") or 0),
            kind=kind,
            label=label[:1].upper() + label[1:],
            precision=None if isinstance(value, str) or not conversion.display else places,
        ))
    return registers


class NotDeliverable(ValueError):
    """A failed read: it carries no values, is kept for the history and never delivered."""


def iso_utc(when: float) -> str:
    """A POSIX time as ISO 8601 UTC to the second, with ``Z``."""
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{name: _finite(value) for name, value in row.items()} for row in rows]


def reading_payload(reading: StoredReading, gateway_id: str, alarm: bool = False) -> dict[str, Any]:
    """
    The flat JSON object of a reading; `alarm` is the meter's alarm state
    (Home Assistant's problem sensor reads it).

    @raise NotDeliverable: for a failed read.
    """
    if not reading.ok:
        raise NotDeliverable(
            f"reading {reading.id} of meter {reading.meter} failed ({reading.error or 'no answer'}): "
            "a failed read has no values to deliver"
        )
    decoded = reading.decoded
    info = decoded.get("meter") or {}
    code = str(info.get("manufacturer") or "")
    payload: dict[str, Any] = {
        "_": "telegram",
        "media": media(info.get("medium")),
        "meter": reading.meter,
        "name": decoded.get("name") or reading.meter,
        "id": str(info.get("identification") or ""),
        "manufacturer": code,
        "manufacturer_name": manufacturer_name(code),
        "version": info.get("version"),
        "line": decoded.get("line"),
        "primary": info.get("primary"),
        "secondary": info.get("secondary"),
        "access_number": decoded.get("access_number"),
    }
    for register in register_keys(reading):
        payload[register.key] = register.value
    payload.update({
        "status": status_words(decoded.get("status")),
        "alarm": bool(alarm),
        "timestamp": iso_utc(reading.time),
        "reading_id": reading.id,
        "gateway": gateway_id,
        "records": _plain_rows(decoded.get("records") or ()),
    })
    return payload


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON in UTF-8 (no NaN: `reading_payload` has made them null)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _user_data(frame: bytes) -> bytes:
    """A long frame from its C field, without checksum and stop byte."""
    if len(frame) >= 6 and frame[0] == 0x68 and frame[3] == 0x68:
        return frame[4:-2]
    return frame


def csv_lines(reading: StoredReading, serial: str) -> list[str]:
    """
    The raw telegrams in the Elvaco CMe3100 value report habit, one line per
    telegram: ``serial;identification;YYYY-MM-DD hh:mm:ss (UTC);telegram
    number (00, 01...);hex from the C field, without checksum and stop byte``.
    """
    info = reading.decoded.get("meter") or {}
    ident = str(info.get("identification") or "")
    when = datetime.datetime.fromtimestamp(reading.time, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return [
        f"{serial};{ident};{when};{number:02d};{_user_data(bytes.fromhex(telegram)).hex()}"
        for number, telegram in enumerate(reading.telegrams)
    ]
