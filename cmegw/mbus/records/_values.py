# -*- test-case-name: tests.test_mbus_records -*-
"""
One record's value: BCD, dates and times, whether a record is a time point,
and the raw value scaled to its unit.
"""

from __future__ import annotations

import datetime
import struct

from cmegw.mbus.records._coding import BCD_CODINGS, INTEGER_CODINGS, VIF_TABLE_FB, VIF_TABLE_FD, Coding
from cmegw.mbus.records._units import Unit


def _decode_bcd(payload: bytes) -> int | None:
    """
    BCD digits, least significant byte first; a top nibble F means negative.
    None if a digit is not decimal.
    """
    digits = payload[::-1].hex().upper()
    sign = 1
    if digits and digits[0] == "F":
        sign = -1
        digits = "0" + digits[1:]
    if not digits.isdigit():
        return None
    return sign * int(digits or "0")


def decode_date(payload: bytes) -> datetime.date | None:
    """
    Type G (2 bytes); None for an invalid or unset date.
    """
    day = payload[0] & 0x1F
    month = payload[1] & 0x0F
    year = _year(((payload[0] & 0xE0) >> 5) | ((payload[1] & 0xF0) >> 1))
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def decode_datetime(payload: bytes) -> datetime.datetime | None:
    """
    Type F (4 bytes) or I (6 bytes); None when marked invalid or impossible.
    """
    if len(payload) == 6:
        second, payload = payload[0] & 0x3F, payload[1:]
    else:
        second = 0
    if payload[0] & 0x80:
        return None
    minute = payload[0] & 0x3F
    hour = payload[1] & 0x1F
    day = payload[2] & 0x1F
    month = payload[3] & 0x0F
    year = _year(((payload[2] & 0xE0) >> 5) | ((payload[3] & 0xF0) >> 1))
    try:
        return datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def decode_time(payload: bytes) -> datetime.time | None:
    """
    Type J (3 bytes): time of day.
    """
    try:
        return datetime.time(payload[2] & 0x1F, payload[1] & 0x3F, payload[0] & 0x3F)
    except ValueError:
        return None


def _year(short: int) -> int:
    return 2000 + short if short <= 80 else 1900 + short


_DATE_FD_CODES = (0x30, 0x70)
# Orthogonal VIFEs that turn the record into the time point of something.
_DATE_VIFES = frozenset((0x39, 0x42, 0x43, 0x46, 0x47, 0x4A, 0x4B, 0x4E, 0x4F, 0x6A, 0x6B, 0x6E, 0x6F))


def _is_time_point(vif: int, vifes: tuple[int, ...]) -> bool:
    code = vif & 0x7F
    if code == 0x7F:
        return False
    if vif == VIF_TABLE_FD:
        return bool(vifes) and vifes[0] & 0x7F in _DATE_FD_CODES or _date_vife(vifes[1:])
    if vif in (VIF_TABLE_FB, 0xEF):
        return _date_vife(vifes[1:])
    return code in (0x6C, 0x6D) or _date_vife(vifes)


def _date_vife(vifes: tuple[int, ...]) -> bool:
    for vife in vifes:
        if vife & 0x7F == 0x7F:
            return False
        if vife & 0x7F in _DATE_VIFES:
            return True
    return False


def _convert(
    coding: Coding, lvar: int | None, payload: bytes, time_point: bool, unit: Unit
) -> tuple[object, object]:
    """
    The raw value and the value in C{unit}.
    """
    if coding in (Coding.NONE, Coding.READOUT):
        return None, None
    if time_point:
        if coding is Coding.INT16:
            date = decode_date(payload)
            return date, date
        if coding in (Coding.INT32, Coding.INT48):
            moment = decode_datetime(payload)
            return moment, moment
        if coding is Coding.INT24:
            time = decode_time(payload)
            return time, time
    raw: object
    if coding in INTEGER_CODINGS:
        raw = int.from_bytes(payload, "little", signed=True)
    elif coding in BCD_CODINGS:
        raw = _decode_bcd(payload)
    elif coding is Coding.REAL32:
        raw = struct.unpack("<f", payload)[0]
    else:
        assert lvar is not None
        if lvar <= 0xBF:
            text = payload[::-1].decode("latin-1")
            return text, text
        if lvar >= 0xE0:
            return payload, payload
        number = _decode_bcd(payload)
        raw = None if number is None else (number if lvar < 0xD0 else -number)
    return raw, _scale(raw, unit)


def _scale(raw: object, unit: Unit) -> object:
    if raw is None or not isinstance(raw, (int, float)):
        return raw
    if unit.exponent >= 0 and unit.factor == 1.0 and isinstance(raw, int):
        return raw * 10**unit.exponent
    # Dividing by an exact power of ten keeps decimals exact where a float can:
    # 2731 * 10.0**-2 is 27.310000000000002, 2731 / 100 is 27.31.
    scaled = raw / 10**-unit.exponent if unit.exponent < 0 else raw * 10.0**unit.exponent
    return scaled * unit.factor if unit.factor != 1.0 else scaled
