# -*- test-case-name: tests.test_web_pages_readouts -*-
"""
What the readout pages and their JSON API show: a reading's registers as a
person reads a meter (the counters first, in kWh, GJ, m³, kW, digits
grouped), the meter's status byte in words, times and ages, and the plain
views of the meter list, the delivery targets and the reading store.

The pages and the API render these same rows; they read only
``gateway.state.readout`` (`cmegw.readout.service.ReadoutService`) and the
saved configuration.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Mapping

from cmegw.config.model import Config
from cmegw.config.readout import format_interval, parse_interval
from cmegw.config.settings import describe, shown_value
from cmegw.readout.formats import local_time, version_text
from cmegw.web.pages.forms import Field

if TYPE_CHECKING:
    from cmegw.readout.views import Register

#: The tabs of the Meters section: the bus master, the meter list of the readouts, their delivery.
METER_TABS = (("M-Bus master", "/meters"), ("Meter list", "/readouts"), ("Delivery", "/delivery"))
#: The fields of a meter, in the order of the forms and the CSV file.
METER_FIELDS = ("line", "address", "name", "interval", "enabled")


# -- times ----------------------------------------------------------------------------------------


def iso_utc(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(name: str, text: str) -> float:
    """
    A time given as seconds since 1970 or ISO 8601 (``2024-03-12T14:00:00Z``,
    ``2024-03-12``; without an offset: UTC).  Raises ValueError naming `name`.
    """
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a time; use ISO 8601 such as 2024-03-12T14:00:00Z "
                         "or seconds since 1970") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


# -- the meter list -------------------------------------------------------------------------------


def meter_fields(key: str) -> list[Field]:
    """The form fields of meter `key`'s settings, labelled as the model labels them."""
    fields = []
    for name in METER_FIELDS:
        setting = f"meter.{key}.{name}"
        info = describe(setting)
        if name == "enabled":
            fields.append(Field(setting, info.label, "checkbox", help="Off: read only by Read now."))
        elif name == "interval":
            fields.append(Field(setting, info.label, placeholder="15m",
                                help="30s (at least 10 s) up to 1d, aligned to the clock; empty: the readout "
                                     "default."))
        elif name == "address":
            fields.append(Field(setting, info.label, placeholder="12345678-KAM-19-04",
                                help="The secondary address (preferred) or a primary address 0..250."))
        else:
            fields.append(Field(setting, info.label, unit=info.unit))
    return fields


def interval_seconds(config: Config, key: str, status: Any = None) -> int:
    if status is not None:
        return int(status.interval)
    meter = config.meters[key]
    return parse_interval(meter.interval) if meter.interval else config.readout.interval_seconds


def interval_text(config: Config, key: str, status: Any = None) -> str:
    text = format_interval(interval_seconds(config, key, status))
    return text + (" (default)" if not config.meters[key].interval else "")


def next_read_text(status: Any, enabled: bool) -> str:
    if status is None:
        return "not scheduled yet"
    if status.reading:
        return "reading now"
    if status.queued:
        return "waiting for the line"
    if not enabled:
        return "off (Read now only)"
    return local_time(status.next_due)


def alarm_text(status: Any) -> str:
    """The alarm in words ("" when there is none): ``no answer for 3 reads: <the last error>``."""
    if status is None or not status.alarm:
        return ""
    return f"no answer for {status.failures_in_row} reads: {status.last_error or 'no reading'}"


def register_view(r: Register) -> dict[str, Any]:
    return {"key": r.key, "label": r.label, "value": r.value, "unit": r.unit, "text": r.text}


def meter_identity(decoded: Mapping[str, Any]) -> dict[str, Any]:
    """What the last reading says of the meter: manufacturer, identification, medium, version, secondary."""
    from cmegw.readout.manufacturers import manufacturer_name  # the readings' views load with the first reading shown

    info = decoded.get("meter") or {}
    found = {k: info.get(k) for k in ("manufacturer", "identification", "medium", "medium_name", "version",
                                      "secondary", "primary")}
    found["manufacturer_name"] = manufacturer_name(str(info.get("manufacturer") or ""))
    found["version_text"] = version_text(info.get("version"))
    return found


def reading_json(reading: Mapping[str, Any], read_time: float | None = None) -> dict[str, Any]:
    """
    A reading's JSON (`cmegw.mbus.results.Reading.as_dict()`) with the words the
    pages show beside its raw fields: the meter's ``manufacturer_name`` and
    ``version_text``, its main registers as ``values``, its ``status_flags``.
    """
    from cmegw.readout.views import reading_view  # the readings' views load with the first reading shown

    view = reading_view(reading, read_time)
    return {**reading, "meter": {**(reading.get("meter") or {}), **meter_identity(reading)},
            "values": [register_view(r) for r in view.main], "status_flags": list(view.status)}


def meter_view(config: Config, key: str, status: Any, now: float) -> dict[str, Any]:
    """One meter of the list for the API: its settings, its schedule state, its main values."""
    from cmegw.readout.views import main_registers, status_flags  # the readings' views load with the first reading shown

    meter = config.meters[key]
    state = status.as_dict() if status is not None else {}
    last = status.last_reading if status is not None else None
    decoded = last.decoded if last is not None else {}
    return {
        "id": key, "name": meter.name, "line": meter.line, "address": meter.address,
        "interval": meter.interval, "interval_seconds": interval_seconds(config, key, status),
        "enabled": meter.enabled,
        "next_due": state.get("next_due"), "busy": state.get("busy", False),
        "last_attempt": state.get("last_attempt"), "last_success": state.get("last_success"),
        "last_reading_time": last.time if last is not None else None,
        "last_reading_age_seconds": now - last.time if last is not None else None,
        "last_reading_id": last.id if last is not None else None,
        "alarm": bool(status is not None and status.alarm), "alarm_text": alarm_text(status),
        "last_error": state.get("last_error", ""), "failures_in_row": state.get("failures_in_row", 0),
        "reads": state.get("reads", 0), "failures": state.get("failures", 0), "overruns": state.get("overruns", 0),
        "status_byte": decoded.get("status"), "status_flags": status_flags(decoded.get("status")),
        "meter": meter_identity(decoded) if decoded else None,
        "values": [register_view(r) for r in main_registers(decoded)],
    }


def target_views(readout: Any, now: float) -> dict[str, dict[str, Any]]:
    """Each delivery target: its status, and the backlog with the age of its oldest reading."""
    out = {}
    for name, status in readout.target_statuses().items():
        count, oldest = readout.backlogs.get(name, (0, None))
        out[name] = {**status.as_dict(), "backlog": count, "oldest_waiting": oldest if count else None,
                     "oldest_waiting_age_seconds": now - oldest if count and oldest is not None else None}
    return out


def store_view(readout: Any) -> dict[str, Any]:
    return dict(readout.store_summary())


def meter_settings_view(config: Config, key: str) -> dict[str, Any]:
    meter = config.meters[key]
    return {"id": key, **{name: shown_value(f"meter.{key}.{name}", getattr(meter, name)) for name in METER_FIELDS}}

