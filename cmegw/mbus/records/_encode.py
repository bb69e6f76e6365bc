# -*- test-case-name: tests.test_mbus_records -*-
"""
The encoder: records and user data of an RSP_UD, for the simulator.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterable

import attrs

from cmegw.mbus import frames
from cmegw.mbus.records._coding import (
    DATA_SIZE,
    DIF_EXTENSION,
    DIF_MANUFACTURER_DATA,
    DIF_MORE_RECORDS_FOLLOW,
    INTEGER_CODINGS,
    MAX_DIFE,
    VIF_PLAIN_TEXT,
    Coding,
    Function,
    Header,
)


class EncodeError(ValueError):
    """
    A value cannot be coded as asked.
    """


# Encoder ------------------------------------------------------------------


def encode_dif(
    coding: Coding,
    storage: int = 0,
    tariff: int = 0,
    subunit: int = 0,
    function: Function = Function.INSTANTANEOUS,
) -> bytes:
    """
    DIF and as many DIFEs as storage number, tariff and subunit need.
    """
    if storage < 0 or tariff < 0 or subunit < 0:
        raise EncodeError("storage number, tariff and subunit cannot be negative")
    dif = int(coding) | (int(function) << 4) | ((storage & 1) << 6)
    storage >>= 1
    difes = []
    while storage or tariff or subunit:
        if len(difes) == MAX_DIFE:
            raise EncodeError(f"storage, tariff or subunit need more than {MAX_DIFE} DIFEs")
        difes.append((storage & 0x0F) | ((tariff & 0x03) << 4) | ((subunit & 1) << 6))
        storage >>= 4
        tariff >>= 2
        subunit >>= 1
    if difes:
        dif |= DIF_EXTENSION
        for i in range(len(difes) - 1):
            difes[i] |= DIF_EXTENSION
    return bytes([dif, *difes])


def _encode_int(value: int, size: int) -> bytes:
    bits = size * 8
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise EncodeError(f"{value} does not fit {size} bytes")
    return (value & ((1 << bits) - 1)).to_bytes(size, "little")


def _encode_bcd(value: int, size: int) -> bytes:
    digits = size * 2
    if value < 0:
        text = f"{-value:0{digits - 1}d}"
        if len(text) > digits - 1:
            raise EncodeError(f"{value} does not fit {digits} BCD digits with a sign")
        text = "F" + text
    else:
        text = f"{value:0{digits}d}"
        if len(text) > digits:
            raise EncodeError(f"{value} does not fit {digits} BCD digits")
    return bytes.fromhex(text)[::-1]


def encode_date(value: datetime.date) -> bytes:
    """
    Type G: 2 bytes.
    """
    year = value.year % 100
    return bytes(
        (value.day | ((year & 0x07) << 5), value.month | ((year & 0x78) << 1))
    )


def encode_datetime(value: datetime.datetime) -> bytes:
    """
    Type F: 4 bytes, minute resolution.
    """
    year = value.year % 100
    return bytes(
        (
            value.minute,
            value.hour,
            value.day | ((year & 0x07) << 5),
            value.month | ((year & 0x78) << 1),
        )
    )


def encode_datetime_seconds(value: datetime.datetime) -> bytes:
    """
    Type I: 6 bytes, second resolution.
    """
    year = value.year % 100
    return bytes(
        (
            value.second,
            value.minute,
            value.hour,
            value.day | ((year & 0x07) << 5),
            value.month | ((year & 0x78) << 1),
            (value.isoweekday() << 5) & 0xE0,
        )
    )


def encode_value(coding: Coding, value: object) -> bytes:
    """
    The data bytes of one record (for VARIABLE, with its LVAR byte).
    """
    if coding in (Coding.NONE, Coding.READOUT):
        if value is not None:
            raise EncodeError(f"coding {coding.name} carries no value")
        return b""
    if coding is Coding.SPECIAL:
        raise EncodeError("DIF 0x0F/0x1F is not a record; see encode_user_data")
    if isinstance(value, datetime.datetime):
        if coding is Coding.INT32:
            return encode_datetime(value)
        if coding is Coding.INT48:
            return encode_datetime_seconds(value)
        raise EncodeError("a date and time is coded INT32 (type F) or INT48 (type I)")
    if isinstance(value, datetime.date):
        if coding is Coding.INT16:
            return encode_date(value)
        raise EncodeError("a date is coded INT16 (type G)")
    if coding is Coding.REAL32:
        if not isinstance(value, (int, float)):
            raise EncodeError(f"REAL32 needs a number, not {value!r}")
        return struct.pack("<f", value)
    if coding is Coding.VARIABLE:
        if isinstance(value, str):
            raw = value.encode("latin-1")
            if len(raw) > 0xBF:
                raise EncodeError("text longer than 191 characters")
            return bytes((len(raw),)) + raw[::-1]
        if isinstance(value, (bytes, bytearray)):
            if len(value) > 0x0F:
                raise EncodeError("binary variable data longer than 15 bytes")
            return bytes((0xE0 + len(value),)) + bytes(value)
        raise EncodeError(f"variable length data needs str or bytes, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EncodeError(f"coding {coding.name} needs a number, not {value!r}")
    number = round(value)
    size = DATA_SIZE[coding]
    if coding in INTEGER_CODINGS:
        return _encode_int(number, size)
    return _encode_bcd(number, size)


@attrs.frozen
class RecordSpec:
    """
    One record to send: VIF bytes (with VIFEs) and a raw value.

    C{value} is the number as coded (already divided by the VIF's scale), a
    C{date} or C{datetime} for time points, C{str} or C{bytes} for
    variable-length data.
    """

    vif: bytes
    value: object
    coding: Coding = Coding.INT32
    storage: int = 0
    tariff: int = 0
    subunit: int = 0
    function: Function = Function.INSTANTANEOUS

    def encode(self) -> bytes:
        return (
            encode_dif(self.coding, self.storage, self.tariff, self.subunit, self.function)
            + self.vif
            + encode_value(self.coding, self.value)
        )


# Primary VIFs with a decimal exponent: VIF base, exponent of nnn = 0, count.
SCALED_QUANTITIES: dict[str, tuple[bytes, int, int]] = {
    "energy": (b"\x00", -3, 8),  # Wh
    "energy_j": (b"\x08", 0, 8),  # J
    "volume": (b"\x10", -6, 8),  # m^3
    "mass": (b"\x18", -3, 8),  # kg
    "power": (b"\x28", -3, 8),  # W
    "power_jh": (b"\x30", 0, 8),  # J/h
    "volume_flow": (b"\x38", -6, 8),  # m^3/h
    "volume_flow_min": (b"\x40", -7, 8),  # m^3/min
    "volume_flow_s": (b"\x48", -9, 8),  # m^3/s
    "mass_flow": (b"\x50", -3, 8),  # kg/h
    "flow_temperature": (b"\x58", -3, 4),  # °C
    "return_temperature": (b"\x5c", -3, 4),  # °C
    "temperature_difference": (b"\x60", -3, 4),  # K
    "external_temperature": (b"\x64", -3, 4),  # °C
    "pressure": (b"\x68", -3, 4),  # bar
    "voltage": (b"\xfd\x40", -9, 16),  # V
    "current": (b"\xfd\x50", -12, 16),  # A
}

DURATION_UNITS = {"s": 0, "min": 1, "h": 2, "d": 3}
DURATION_VIFS = {
    "on_time": 0x20,
    "operating_time": 0x24,
    "averaging_duration": 0x70,
    "actuality_duration": 0x74,
}


def scaled(
    quantity: str,
    value: float,
    exponent: int,
    coding: Coding = Coding.INT32,
    **where: int,
) -> RecordSpec:
    """
    A record for a quantity in base units (Wh, m^3, W, °C, K, bar, V, A).

    C{scaled("energy", 1234567.0, 3)} codes 1234 with VIF 0x06 (kWh).
    C{where} takes storage, tariff, subunit and function.
    """
    vif, lowest, count = SCALED_QUANTITIES[quantity]
    if not lowest <= exponent < lowest + count:
        raise EncodeError(
            f"{quantity} exponent {exponent} is outside {lowest}..{lowest + count - 1}"
        )
    raw: float = value / 10.0**exponent
    if coding is not Coding.REAL32:
        raw = round(raw)
    coded_vif = vif[:-1] + bytes((vif[-1] + exponent - lowest,))
    return RecordSpec(coded_vif, raw, coding, **where)


def duration(
    kind: str, value: int, unit: str = "s", coding: Coding = Coding.INT32, **where: int
) -> RecordSpec:
    """
    On time, operating time, averaging or actuality duration in s/min/h/d.
    """
    return RecordSpec(
        bytes((DURATION_VIFS[kind] | DURATION_UNITS[unit],)), value, coding, **where
    )


def date_point(value: datetime.date, **where: int) -> RecordSpec:
    return RecordSpec(b"\x6c", value, Coding.INT16, **where)


def datetime_point(value: datetime.datetime, **where: int) -> RecordSpec:
    return RecordSpec(b"\x6d", value, Coding.INT32, **where)


def fabrication_number(value: int, coding: Coding = Coding.BCD8) -> RecordSpec:
    return RecordSpec(b"\x78", value, coding)


def error_flags(value: int, coding: Coding = Coding.INT8) -> RecordSpec:
    return RecordSpec(b"\xfd\x17", value, coding)


def firmware_version(value: int, coding: Coding = Coding.INT8) -> RecordSpec:
    return RecordSpec(b"\xfd\x0e", value, coding)


def model_version(value: int | str, coding: Coding = Coding.INT8) -> RecordSpec:
    return RecordSpec(b"\xfd\x0c", value, coding)


def plain_text_unit(unit: str, value: object, coding: Coding = Coding.INT32, **where: int) -> RecordSpec:
    """
    A record whose unit is given as text (VIF 0x7C).
    """
    raw = unit.encode("ascii")
    return RecordSpec(bytes((VIF_PLAIN_TEXT, len(raw))) + raw[::-1], value, coding, **where)


def encode_user_data(
    header: Header | None,
    records: Iterable[RecordSpec | bytes],
    more_follows: bool = False,
    manufacturer_data: bytes = b"",
) -> bytes:
    """
    User data after the CI field: header, records, then DIF 0x1F (more
    telegrams follow) or 0x0F (manufacturer data) and their bytes.
    """
    parts = [header.encode() if header else b""]
    for record in records:
        parts.append(record if isinstance(record, bytes) else record.encode())
    if more_follows:
        parts.append(bytes((DIF_MORE_RECORDS_FOLLOW,)) + manufacturer_data)
    elif manufacturer_data:
        parts.append(bytes((DIF_MANUFACTURER_DATA,)) + manufacturer_data)
    return b"".join(parts)


def rsp_ud(
    a: int,
    header: Header,
    records: Iterable[RecordSpec | bytes],
    more_follows: bool = False,
    manufacturer_data: bytes = b"",
    c: int = frames.RSP_UD,
) -> bytes:
    """
    A complete RSP_UD long frame (CI 0x72 or 0x7A from the header).
    """
    return frames.long_frame(
        c, a, header.ci, encode_user_data(header, records, more_follows, manufacturer_data)
    )
