# -*- test-case-name: tests.test_readout_store -*-
"""
What the readout parts pass between them: a `StoredReading`, a delivery
target's `TargetStatus`, the `DeliveryTarget` interface, and the reading
store's `StoreError` (here, so that the store's face and its SQLite side share
it without the face importing sqlite3 before the store is opened).
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import attrs
from twisted.internet import defer

#: TargetStatus.state values.
TARGET_OFF = "off"
TARGET_CONNECTING = "connecting"
TARGET_CONNECTED = "connected"
TARGET_DOWN = "down"


class StoreError(Exception):
    """The reading store cannot do its job; the message names the file and what to do."""


@attrs.frozen
class StoredReading:
    """
    One readout of one meter, as the store keeps it and the targets deliver it.

    `decoded` is `cmegw.mbus.results.Reading.as_dict()` without ``frames``
    (the raw telegrams are `telegrams`, hex), plus ``name`` and ``line`` of
    the meter list: ``meter`` (MeterInfo.as_dict), ``status``,
    ``access_number``, ``read_at`` and ``records`` (rows with value, unit,
    scale, quantity, description, storage, tariff, subunit, function,
    timestamp).  A failed read has ``ok`` False, an ``error`` and no records;
    it is kept for the meter's history and alarms, never delivered.
    """

    id: int
    meter: str
    time: float
    ok: bool = True
    telegrams: tuple[str, ...] = ()
    decoded: Mapping[str, Any] = attrs.field(factory=dict)
    error: str = ""


@attrs.define
class TargetStatus:
    """
    What a delivery target shows on the pages, the console, the API and
    /metrics.  The target sets its state and error; the forwarder counts
    what was delivered and each breakdown (``failures``).
    """

    name: str
    state: str = TARGET_OFF
    #: The last error in words a field engineer understands ("" while all is well).
    error: str = ""
    since: float = 0.0
    last_delivery: float | None = None
    delivered: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def stored_form(reading: Any, name: str, line: int | None) -> tuple[tuple[str, ...], dict[str, Any]]:
    """
    (telegrams as hex, decoded) of a master's `cmegw.mbus.results.Reading`
    as the store keeps it: `Reading.as_dict` without its frames, plus the
    meter list's name and line.
    """
    decoded = dict(reading.as_dict())
    telegrams = tuple(decoded.pop("frames", ()))
    decoded.update(name=name, line=line)
    return telegrams, decoded


def gateway_id(config: Any) -> str:
    """The gateway's id in topics and payloads: its serial number (``identity.serial_number``) in lower case."""
    return (config.identity.serial_number or "cmegw").lower()


class DeliveryTarget(Protocol):
    """
    A place readings go (MQTT broker, HTTP receiver).  ``name`` keys its queue
    in the store (``mqtt``, ``push.1``); the forwarder sends at most
    ``window`` readings at a time, oldest first, and only while ``ready()``.
    """

    name: str
    status: TargetStatus
    window: int

    def start(self) -> None:
        ...

    def stop(self) -> defer.Deferred:
        ...

    def ready(self) -> bool:
        ...

    def deliver(self, reading: StoredReading) -> defer.Deferred:
        """Fires (with None) once the target acknowledged the reading; fails when it did not."""
        ...
