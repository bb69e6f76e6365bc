# -*- test-case-name: tests.test_readout_discovery -*-
"""
Home Assistant's MQTT discovery for the meters: one retained config message
per entity, built from a meter's last reading (the registers it actually
sends, `cmegw.readout.payload.register_keys`), and the empty retained
messages that remove them again.

Every meter is a device (``cmegw_<gateway>_<meter>``) reached through the
gateway's device (``cmegw_<gateway>``, announced by `gateway_messages`).
Its entities read the reading's JSON on ``<base>/<gateway>/<meter>``
(`state_topic`) and are available while ``<base>/<gateway>/status`` says
``online``; a value expires after three reading intervals without a new one.

- counters (energy, volume, mass, hours, H.C.A. units) of storage 0 are
  ``total_increasing`` (a meter exchange or an H.C.A.'s yearly reset reads
  as a reset, which that class allows);
- flows, powers, temperatures, pressures, voltages, currents are
  ``measurement``, their maximum and minimum values too;
- billing values (storage >= 1: ``target_...``, ``storage_<n>_...``) are
  plain sensors without a state class: they jump on the due day and are no
  series to make statistics of, but stay visible with their device class
  and unit beside the current values;
- what the meter says about itself (fabrication number, versions, error
  flags, its clock), the values it froze in an error state and what the
  tables do not know are diagnostic entities without a state class; the
  unknown ones start disabled;
- a temperature difference has no device class: Home Assistant's
  ``temperature`` would take 27 K for -246 °C;
- ``alarm`` is a ``problem`` binary sensor, ``status`` and ``timestamp``
  (the last reading) diagnostic sensors.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import attrs

from cmegw.readout import payload
from cmegw.readout.payload import DATE, DATETIME, INFO, MEASUREMENT, OTHER, TOTAL, Register
from cmegw.readout.reading import StoredReading

ONLINE = "online"
OFFLINE = "offline"
#: A value expires after this many reading intervals without a new one.
EXPIRE_INTERVALS = 3

#: Media whose volume Home Assistant counts as water (or gas).
WATER_MEDIA = frozenset((0x06, 0x07, 0x15, 0x16, 0x17, 0x28))
GAS_MEDIA = frozenset((0x03,))

#: A register's display unit -> Home Assistant's device class (volume: by medium).
DEVICE_CLASSES = {
    "kWh": "energy",
    "kW": "power",
    "m³/h": "volume_flow_rate",
    "°C": "temperature",
    "h": "duration",
    "s": "duration",
    "bar": "pressure",
    "V": "voltage",
    "A": "current",
    "kg": "weight",
}


@attrs.frozen
class Message:
    """One MQTT message to publish."""

    topic: str
    payload: bytes
    retain: bool = True


_SEGMENT = re.compile(r"[^A-Za-z0-9_-]")


def segment(text: str) -> str:
    """One topic level of an id: letters, digits, ``_`` and ``-`` only (never ``+ # /``)."""
    return _SEGMENT.sub("_", str(text)) or "_"


def topic_path(text: str, what: str = "topic") -> str:
    """A configured topic prefix (levels kept), without wildcards or empty levels."""
    levels = [re.sub(r"[+#\x00]", "_", level) for level in str(text).split("/") if level]
    if not levels:
        raise ValueError(f"the MQTT {what} is empty")
    return "/".join(levels)


def state_topic(base_topic: str, gateway_id: str, meter_id: str) -> str:
    """Where a meter's readings are published (their JSON, `payload.encode`)."""
    return f"{topic_path(base_topic, 'base topic')}/{segment(gateway_id)}/{segment(meter_id)}"


def alarm_topic(base_topic: str, gateway_id: str, meter_id: str) -> str:
    """A meter's alarm: ``ON`` or ``OFF``, retained, published when it changes and at each connect."""
    return state_topic(base_topic, gateway_id, meter_id) + "/alarm"


def alarm_message(base_topic: str, gateway_id: str, meter_id: str, alarm: bool) -> Message:
    return Message(alarm_topic(base_topic, gateway_id, meter_id), b"ON" if alarm else b"OFF")


def status_topic(base_topic: str, gateway_id: str) -> str:
    """The gateway's availability: ``online`` retained, ``offline`` as its will."""
    return f"{topic_path(base_topic, 'base topic')}/{segment(gateway_id)}/status"


def gateway_identifier(gateway_id: str) -> str:
    return f"cmegw_{segment(gateway_id)}"


def meter_identifier(gateway_id: str, meter_id: str) -> str:
    return f"cmegw_{segment(gateway_id)}_{segment(meter_id)}"


def _node(gateway_id: str, meter_id: str) -> str:
    return f"{segment(gateway_id)}_{segment(meter_id)}"


def _config_topic(prefix: str, component: str, node: str, key: str) -> str:
    return f"{topic_path(prefix, 'discovery prefix')}/{component}/{node}/{segment(key)}/config"


def _json(config: Mapping[str, Any]) -> bytes:
    return json.dumps(config, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _medium(reading: StoredReading) -> int | None:
    return (reading.decoded.get("meter") or {}).get("medium")


def device_class(register: Register, medium: int | None) -> str | None:
    """Home Assistant's device class of a register, None where it has none that fits."""
    if register.kind == DATE:
        return "date"
    if register.unit_out == "m³":
        if medium in WATER_MEDIA:
            return "water"
        if medium in GAS_MEDIA:
            return "gas"
        return "volume"
    if not register.numeric:
        return None
    return DEVICE_CLASSES.get(register.unit_out)


_MEASURED = ("Instantaneous value", "Maximum value", "Minimum value")


def state_class(register: Register) -> str | None:
    """``total_increasing`` for counters, ``measurement`` for measurements, None for the rest."""
    if register.storage != 0:
        return None
    if register.kind == TOTAL and register.function == "Instantaneous value":
        return "total_increasing"
    if register.kind == MEASUREMENT and register.function in _MEASURED:
        return "measurement"
    return None


def _sensor(register: Register, medium: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {"name": register.label}
    klass = device_class(register, medium)
    if klass is not None:
        config["device_class"] = klass
    kind = state_class(register)
    if kind is not None:
        config["state_class"] = kind
    if register.unit_out and register.numeric:
        config["unit_of_measurement"] = register.unit_out
        if register.precision is not None:
            config["suggested_display_precision"] = register.precision
    if register.kind in (INFO, OTHER, DATETIME) or register.function == "Value during error state":
        config["entity_category"] = "diagnostic"
    if register.kind == OTHER:
        config["enabled_by_default"] = False
    return config


def _model(reading: StoredReading) -> str:
    info = reading.decoded.get("meter") or {}
    words = payload.media(info.get("medium"))
    version = info.get("version")
    model = f"{words[:1].upper()}{words[1:]} meter"
    return model if version is None else f"{model}, version {version}"


def _device(meter_id: str, meter_name: str, reading: StoredReading, gateway_id: str,
            gateway_info: Mapping[str, Any]) -> dict[str, Any]:
    info = reading.decoded.get("meter") or {}
    code = str(info.get("manufacturer") or "")
    device: dict[str, Any] = {
        "identifiers": [meter_identifier(gateway_id, meter_id)],
        "name": meter_name or meter_id,
        "manufacturer": payload.manufacturer_name(code) or code or "unknown",
        "model": _model(reading),
        "via_device": gateway_identifier(gateway_id),
    }
    if info.get("identification"):
        device["serial_number"] = str(info["identification"])
    if gateway_info.get("configuration_url"):
        device["configuration_url"] = str(gateway_info["configuration_url"])
    return device


def _origin(gateway_info: Mapping[str, Any]) -> dict[str, Any]:
    origin = {"name": "cmegw"}
    if gateway_info.get("sw_version"):
        origin["sw_version"] = str(gateway_info["sw_version"])
    return origin


def _entities(reading: StoredReading) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, key, the entity's own config) of every entity of a meter."""
    medium = _medium(reading)
    entities = [("sensor", register.key, _sensor(register, medium)) for register in payload.register_keys(reading)]
    entities += [
        ("binary_sensor", "alarm", {
            "name": "Alarm",
            "device_class": "problem",
            # Its own retained topic (see `alarm_topic`): a meter that stops answering sends no
            # reading, so the alarm cannot ride on the readings, nor expire with them.
            "value_template": "{{ value }}",
        }),
        ("sensor", "status", {"name": "Status", "entity_category": "diagnostic"}),
        ("sensor", "timestamp", {"name": "Last reading", "device_class": "timestamp",
                                 "entity_category": "diagnostic"}),
    ]
    return entities


def discovery_messages(
    meter_id: str,
    meter_name: str,
    reading: StoredReading,
    gateway_id: str,
    base_topic: str,
    discovery_prefix: str,
    interval_s: float,
    gateway_info: Mapping[str, Any],
) -> list[Message]:
    """
    The retained config messages of one meter's entities, from its last
    reading (`gateway_info`: ``sw_version`` and ``configuration_url`` are
    used where given).
    """
    node = _node(gateway_id, meter_id)
    device = _device(meter_id, meter_name, reading, gateway_id, gateway_info)
    common = {
        "state_topic": state_topic(base_topic, gateway_id, meter_id),
        "availability": [{
            "topic": status_topic(base_topic, gateway_id),
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
        }],
        "expire_after": max(1, int(round(EXPIRE_INTERVALS * interval_s))),
        "device": device,
        "origin": _origin(gateway_info),
    }
    messages = []
    for component, key, own in _entities(reading):
        config = {
            **own,
            "unique_id": f"{meter_identifier(gateway_id, meter_id)}_{segment(key)}",
            **common,
        }
        config.setdefault("value_template", "{{ value_json.%s }}" % key)
        if component == "binary_sensor" and key == "alarm":
            config["state_topic"] = alarm_topic(base_topic, gateway_id, meter_id)
            config.pop("expire_after", None)
        messages.append(Message(_config_topic(discovery_prefix, component, node, key), _json(config)))
    return messages


def config_topics(meter_id: str, reading: StoredReading, gateway_id: str, discovery_prefix: str) -> list[str]:
    """The config topics of a meter's entities, as `discovery_messages` publishes them."""
    node = _node(gateway_id, meter_id)
    return [_config_topic(discovery_prefix, component, node, key) for component, key, _ in _entities(reading)]


def removal_messages(meter_id: str, reading: StoredReading, gateway_id: str, discovery_prefix: str) -> list[Message]:
    """Empty retained messages on every config topic of a meter: Home Assistant removes its entities."""
    return [Message(topic, b"") for topic in config_topics(meter_id, reading, gateway_id, discovery_prefix)]


def gateway_messages(gateway_id: str, base_topic: str, discovery_prefix: str,
                     gateway_info: Mapping[str, Any]) -> list[Message]:
    """
    The gateway's own device (the meters' ``via_device``) with one
    ``connectivity`` binary sensor on its status topic.  `gateway_info` may
    give ``name``, ``manufacturer``, ``model``, ``sw_version``,
    ``hw_version``, ``serial_number`` and ``configuration_url``.
    """
    device: dict[str, Any] = {
        "identifiers": [gateway_identifier(gateway_id)],
        "name": str(gateway_info.get("name") or f"cmegw {gateway_id}"),
        "manufacturer": str(gateway_info.get("manufacturer") or "cmegw"),
        "model": str(gateway_info.get("model") or "M-Bus gateway"),
    }
    for field in ("sw_version", "hw_version", "serial_number", "configuration_url"):
        if gateway_info.get(field):
            device[field] = str(gateway_info[field])
    config = {
        "name": "Connectivity",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "state_topic": status_topic(base_topic, gateway_id),
        "payload_on": ONLINE,
        "payload_off": OFFLINE,
        "unique_id": f"{gateway_identifier(gateway_id)}_status",
        "device": device,
        "origin": _origin(gateway_info),
    }
    return [Message(gateway_config_topic(gateway_id, discovery_prefix), _json(config))]


def gateway_config_topic(gateway_id: str, discovery_prefix: str) -> str:
    return _config_topic(discovery_prefix, "binary_sensor", segment(gateway_id), "status")

