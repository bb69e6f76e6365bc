# -*- test-case-name: tests.test_mbus_records -*-
"""
The decoder: what real meters send (variable and fixed data structures).
"""

from __future__ import annotations

import datetime

import attrs

from cmegw.mbus import frames
from cmegw.mbus.address import SecondaryAddress, decode_bcd_ident
from cmegw.mbus.records._coding import (
    DATA_SIZE,
    DIF_IDLE_FILLER,
    DIF_MANUFACTURER_DATA,
    DIF_MORE_RECORDS_FOLLOW,
    FUNCTION_NAMES,
    MAX_DIFE,
    MAX_VIFE,
    VIF_PLAIN_TEXT,
    VIF_TABLE_FB,
    VIF_TABLE_FD,
    Coding,
    Function,
    Header,
)
from cmegw.mbus.records._units import (
    FB_UNITS,
    FD_UNITS,
    FIXED_UNITS,
    PRIMARY_UNITS,
    RESERVED_UNIT,
    Unit,
    describe_vife,
)
from cmegw.mbus.records._values import _convert, _decode_bcd, _is_time_point, _scale


# Decoder ------------------------------------------------------------------


class DecodeError(ValueError):
    """
    The user data is not a telegram we can decode.
    """


class TruncatedData(DecodeError):
    """
    The data ends inside a header or a record.
    """


class TooManyExtensions(DecodeError):
    """
    More than 10 DIFEs or VIFEs in one record.
    """


class UnsupportedTelegram(DecodeError):
    """
    A CI field, data coding or encryption this decoder does not handle.
    """


class ApplicationError(DecodeError):
    """
    The slave answered with an application error (CI 0x70).
    """

    def __init__(self, code: int | None) -> None:
        self.code = code
        meaning = APPLICATION_ERRORS.get(code, "reserved error code") if code is not None else "unspecified error"
        number = "" if code is None else f" {code}"
        super().__init__(f"the meter reports application error{number}: {meaning}")


APPLICATION_ERRORS = {
    0: "unspecified error",
    1: "unimplemented CI field",
    2: "buffer too long, truncated",
    3: "too many records",
    4: "premature end of record",
    5: "more than 10 DIFEs",
    6: "more than 10 VIFEs",
    7: "reserved",
    8: "application too busy for handling readout request",
    9: "too many readouts (for slaves with limited readouts per time)",
}

@attrs.frozen
class Record:
    """
    One decoded data record.

    C{raw} is the value as coded; C{value} is C{raw} scaled to C{unit}
    (C{raw * 10 ** exponent * factor}) for numbers, or the decoded text,
    date, time or bytes.  C{None} where the meter marks the value invalid
    (an invalid date, BCD with hex digits A-F used as an error display).
    C{vif} is None for the counters of a fixed data structure.
    """

    dif: int
    difes: tuple[int, ...]
    vif: int | None
    vifes: tuple[int, ...]
    data: bytes
    coding: Coding
    function: Function
    storage: int
    tariff: int
    subunit: int
    quantity: str
    unit: str
    exponent: int
    raw: object
    value: object
    factor: float = 1.0
    plain_text_unit: str | None = None
    vife_meanings: tuple[str, ...] = ()
    manufacturer_vife: bool = False

    @property
    def function_name(self) -> str:
        return FUNCTION_NAMES[self.function]


@attrs.frozen
class Telegram:
    """
    A decoded RSP_UD: header, records, and what follows the last record.

    C{manufacturer_data} holds the bytes after DIF 0x0F or 0x1F (maybe
    empty); it is C{None} when the telegram has neither.  C{more_follows}
    says the telegram ended with 0x1F: the master should ask again with FCB
    toggled.
    """

    ci: int
    header: Header
    records: tuple[Record, ...]
    more_follows: bool = False
    manufacturer_data: bytes | None = None
    fixed: bool = False

    @property
    def address(self) -> SecondaryAddress | None:
        return self.header.address


_VARIABLE_CIS = {
    frames.CI_VARIABLE: 12,
    frames.CI_VARIABLE_SHORT: 4,
    frames.CI_VARIABLE_NO_HEADER: 0,
}
MAX_RECORDS = 255
# Security modes of the configuration field (signature) that encrypt the
# records with AES; decrypted data starts with 2F 2F.  Other values in
# this field are common on wired meters and mean nothing.
ENCRYPTION_MODES = frozenset((5, 7, 13))


def decode_frame(frame: frames.Frame) -> Telegram:
    """
    Decode a parsed long or control frame from a slave.
    """
    if frame.kind not in ("long", "control") or frame.ci is None:
        raise DecodeError(f"a {frame.kind} frame carries no user data")
    if frame.function is not None and frame.function != frames.RSP_UD:
        raise DecodeError(f"C field 0x{frame.c:02X} is not a RSP_UD")
    return decode_user_data(frame.ci, frame.data)


def decode_user_data(ci: int, data: bytes) -> Telegram:
    """
    Decode the user data (after CI) of a slave's answer.

    @raise DecodeError: for anything that is not a complete, well-formed
        telegram (the specific subclass says why).
    """
    data = bytes(data)
    if ci == frames.CI_APPLICATION_ERROR:
        raise ApplicationError(data[0] if data else None)
    if ci == frames.CI_FIXED:
        return _decode_fixed(ci, data)
    if ci not in _VARIABLE_CIS:
        raise UnsupportedTelegram(f"CI 0x{ci:02X} is not a variable or fixed data answer we decode")
    size = _VARIABLE_CIS[ci]
    if len(data) < size:
        raise TruncatedData(
            f"CI 0x{ci:02X} needs a {size}-byte header, the telegram has {len(data)} bytes"
        )
    header = _decode_header(data[:size])
    mode = (header.signature >> 8) & 0x1F
    if mode in ENCRYPTION_MODES and data[size : size + 2] != b"\x2f\x2f":
        raise UnsupportedTelegram(f"the data is encrypted (security mode {mode})")
    records, more, tail = _decode_records(data, size)
    return Telegram(ci, header, tuple(records), more, tail)


def _decode_header(raw: bytes) -> Header:
    if not raw:
        return Header()
    address = SecondaryAddress.from_bytes(raw[:8]) if len(raw) == 12 else None
    tail = raw[-4:]
    return Header(address, tail[0], tail[1], int.from_bytes(tail[2:4], "little"))


def _decode_records(data: bytes, pos: int) -> tuple[list[Record], bool, bytes | None]:
    records: list[Record] = []
    end = len(data)
    while pos < end:
        dif = data[pos]
        if dif == DIF_IDLE_FILLER:
            pos += 1
            continue
        if dif in (DIF_MANUFACTURER_DATA, DIF_MORE_RECORDS_FOLLOW):
            return records, dif == DIF_MORE_RECORDS_FOLLOW, data[pos + 1 :]
        if dif & 0x0F == 0x0F:
            raise DecodeError(f"reserved special DIF 0x{dif:02X} at byte {pos}")
        if len(records) == MAX_RECORDS:
            raise DecodeError(f"more than {MAX_RECORDS} records")
        record, pos = _decode_record(data, pos)
        records.append(record)
    return records, False, None


def _read_difes(data: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """
    The DIFEs after the DIF at C{pos - 1}: read while bit 7 is set.
    """
    found: list[int] = []
    while data[pos - 1] & 0x80:
        if len(found) == MAX_DIFE:
            raise TooManyExtensions(f"more than {MAX_DIFE} DIFEs at byte {pos}")
        if pos >= len(data):
            raise TruncatedData(f"the data ends where a DIFE should follow (byte {pos})")
        found.append(data[pos])
        pos += 1
    return tuple(found), pos


def _decode_record(data: bytes, start: int) -> tuple[Record, int]:
    dif = data[start]
    difes, pos = _read_difes(data, start + 1)
    coding = Coding(dif & 0x0F)
    function = Function((dif >> 4) & 0x03)
    storage = (dif >> 6) & 0x01
    tariff = subunit = 0
    for index, dife in enumerate(difes):
        storage |= (dife & 0x0F) << (1 + 4 * index)
        tariff |= ((dife >> 4) & 0x03) << (2 * index)
        subunit |= ((dife >> 6) & 0x01) << index
    if pos >= len(data):
        raise TruncatedData(f"the data ends where the VIF of the record at byte {start} should be")
    vif = data[pos]
    pos += 1
    text_unit = None
    if vif & 0x7F == VIF_PLAIN_TEXT:
        if pos >= len(data):
            raise TruncatedData(f"the plain text unit length of the record at byte {start} is missing")
        length = data[pos]
        if pos + 1 + length > len(data):
            raise TruncatedData(
                f"the plain text unit of the record at byte {start} announces {length} "
                f"characters, {len(data) - pos - 1} bytes remain"
            )
        text_unit = data[pos + 1 : pos + 1 + length][::-1].decode("latin-1")
        pos += 1 + length
    vifes, pos = _read_vifes(data, pos, vif)
    unit, meanings, manufacturer_vife = _interpret_vif(vif, vifes, text_unit)
    payload, lvar, pos = _read_value(data, pos, coding, start)
    time_point = _is_time_point(vif, vifes)
    raw, value = _convert(coding, lvar, payload, time_point, unit)
    if isinstance(raw, (datetime.date, datetime.time)) or (
        raw is None and coding is not Coding.NONE and time_point
    ):
        unit = attrs.evolve(unit, unit="", exponent=0, factor=1.0)
    record = Record(
        dif=dif,
        difes=difes,
        vif=vif,
        vifes=vifes,
        data=payload,
        coding=coding,
        function=function,
        storage=storage,
        tariff=tariff,
        subunit=subunit,
        quantity=unit.quantity,
        unit=unit.unit,
        exponent=unit.exponent,
        raw=raw,
        value=value,
        factor=unit.factor,
        plain_text_unit=text_unit,
        vife_meanings=meanings,
        manufacturer_vife=manufacturer_vife,
    )
    return record, pos


def _read_vifes(data: bytes, pos: int, vif: int) -> tuple[tuple[int, ...], int]:
    found: list[int] = []
    more = bool(vif & 0x80)
    while more:
        if len(found) == MAX_VIFE:
            raise TooManyExtensions(f"more than {MAX_VIFE} VIFEs at byte {pos}")
        if pos >= len(data):
            raise TruncatedData(f"the data ends where a VIFE should follow (byte {pos})")
        found.append(data[pos])
        more = bool(data[pos] & 0x80)
        pos += 1
    return tuple(found), pos


def _interpret_vif(
    vif: int, vifes: tuple[int, ...], text_unit: str | None
) -> tuple[Unit, tuple[str, ...], bool]:
    """
    The unit of a VIF and its VIFEs, the meanings of the orthogonal VIFEs,
    and whether a VIFE 0x7F hands the rest to the manufacturer.
    """
    code = vif & 0x7F
    rest = vifes
    if vif == VIF_TABLE_FD or vif == VIF_TABLE_FB:
        table = FD_UNITS if vif == VIF_TABLE_FD else FB_UNITS
        unit = table.get(vifes[0] & 0x7F, RESERVED_UNIT)
        rest = vifes[1:]
    elif vif == 0xEF:
        unit = Unit("Reserved VIF extension")
        rest = vifes[1:]
    elif code == VIF_PLAIN_TEXT:
        unit = Unit(text_unit or "", text_unit or "")
    else:
        unit = PRIMARY_UNITS.get(code, RESERVED_UNIT)
    if code == 0x7F:
        # The VIFEs of a manufacturer specific VIF are the manufacturer's.
        return unit, (), True
    meanings: list[str] = []
    exponent = unit.exponent
    manufacturer = False
    for vife in rest:
        meaning = vife & 0x7F
        meanings.append(describe_vife(meaning))
        if meaning == 0x7F:
            manufacturer = True
            break
        if 0x70 <= meaning <= 0x77:
            exponent += (meaning & 0x07) - 6
        elif meaning == 0x7D:
            exponent += 3
    if exponent != unit.exponent:
        unit = attrs.evolve(unit, exponent=exponent)
    return unit, tuple(meanings), manufacturer


_LVAR_BINARY_LONG = {0xF5: 48, 0xF6: 64}


def _variable_length(lvar: int, where: int) -> int:
    if lvar <= 0xBF:
        return lvar
    if 0xC0 <= lvar <= 0xC9 or 0xD0 <= lvar <= 0xD9:
        return lvar & 0x0F
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC)
    if lvar in _LVAR_BINARY_LONG:
        return _LVAR_BINARY_LONG[lvar]
    raise UnsupportedTelegram(f"reserved variable length byte 0x{lvar:02X} in the record at byte {where}")


def _read_value(data: bytes, pos: int, coding: Coding, start: int) -> tuple[bytes, int | None, int]:
    lvar = None
    if coding is Coding.VARIABLE:
        if pos >= len(data):
            raise TruncatedData(f"the variable length byte of the record at byte {start} is missing")
        lvar = data[pos]
        pos += 1
        size = _variable_length(lvar, start)
    else:
        size = DATA_SIZE[coding]
    if pos + size > len(data):
        raise TruncatedData(
            f"the record at byte {start} needs {size} data bytes, {len(data) - pos} remain"
        )
    return data[pos : pos + size], lvar, pos + size


# Fixed data structure (CI 0x73) -------------------------------------------

FIXED_DATA_LENGTH = 16


def _decode_fixed(ci: int, data: bytes) -> Telegram:
    """
    The fixed data structure: identification, access number, status, two
    counters with their medium and units.  It has no manufacturer or
    version: the address shows manufacturer "@@@" (code 0) and version 0.
    """
    if len(data) != FIXED_DATA_LENGTH:
        raise TruncatedData(
            f"fixed data is {FIXED_DATA_LENGTH} bytes, the telegram has {len(data)}"
        )
    ident = decode_bcd_ident(data[0:4])
    access, status, type1, type2 = data[4], data[5], data[6], data[7]
    medium = ((type1 & 0xC0) >> 6) | ((type2 & 0xC0) >> 4)
    header = Header(SecondaryAddress(ident, "@@@", 0, medium), access, status, 0)
    binary = bool(status & 0x80)
    function = Function.INSTANTANEOUS
    records = []
    for index, (unit_code, payload) in enumerate(((type1, data[8:12]), (type2, data[12:16]))):
        unit = FIXED_UNITS.get(unit_code & 0x3F, RESERVED_UNIT)
        raw = int.from_bytes(payload, "little") if binary else _decode_bcd(payload)
        coding = Coding.INT32 if binary else Coding.BCD8
        records.append(
            Record(
                dif=int(coding),
                difes=(),
                vif=None,
                vifes=(),
                data=payload,
                coding=coding,
                function=function,
                storage=1 if status & 0x40 and index == 1 else 0,
                tariff=0,
                subunit=0,
                quantity=unit.quantity,
                unit=unit.unit,
                exponent=unit.exponent,
                raw=raw,
                value=_scale(raw, unit),
            )
        )
    return Telegram(ci, header, tuple(records), fixed=True)
